"""Name → object registries with helpful errors (in the spirit of timm's model registry)."""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from deploykit.errors import DeployKitError

T = TypeVar("T")


def unknown_name_message(kind: str, name: str, valid: list[str]) -> str:
    """``unknown KIND 'NAME' (did you mean 'X'?); valid: a, b, c``."""
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {kind} {name!r}{hint}; valid: {', '.join(sorted(valid))}"


class Registry(Generic[T]):
    """A named collection of factories or objects.

    Args:
        kind: what the entries are ("criterion", "model family", ...), used in errors.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""

        def add(o: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = o
            return o

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        """Return the entry for ``name`` or raise a DeployKitError listing valid names."""
        try:
            return self._entries[name]
        except KeyError:
            raise DeployKitError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        """The one-line error for an unknown name: a suggestion and the valid names."""
        return unknown_name_message(self.kind, name, self.names())

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching a shell-style wildcard."""
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


U = TypeVar("U")


class View(Generic[U]):
    """The entries of a registry that offer one thing, read live from it.

    One registry can hold records with several facets (a backend's runner and its latency
    timer); a view lists only those that have the facet one use needs, so that use gets the
    same "did you mean / valid: …" errors without a parallel list of names.

    Args:
        kind: what the view's entries are, used in errors.
        source: the registry viewed.
        facet: an entry's facet, or None where it has none.
    """

    def __init__(self, kind: str, source: Registry[T], facet: Callable[[T], U | None]) -> None:
        self.kind, self._source, self._facet = kind, source, facet

    def _entries(self) -> dict[str, U]:
        found = {n: self._facet(self._source.get(n)) for n in self._source.names()}
        return {n: f for n, f in found.items() if f is not None}

    def get(self, name: str) -> U:
        """The facet of ``name``, or a DeployKitError listing the names that have it."""
        entries = self._entries()
        if name not in entries:
            raise DeployKitError(self.unknown_message(name))
        return entries[name]

    def unknown_message(self, name: str) -> str:
        """The one-line error for a name without the facet."""
        return unknown_name_message(self.kind, name, self.names())

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted names with the facet matching a shell-style wildcard."""
        return sorted(n for n in self._entries() if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries())


def resolve(ref: str) -> Any:
    """The object a ``"package.module:name"`` reference names, importing its module.

    Registries hold such references so that naming one entry imports only its module.
    """
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)
