"""Optional packages imported on first use (after Polygraphy's ``mod.lazy_import``).

``tensorrt = lazy_import("tensorrt", what="TensorRT", install="pip install 'deploykit[gpu]'")``
at module level costs nothing: the package is imported when an attribute is first read,
so importing deploykit never needs a GPU package. A package that is missing raises one
:class:`MissingModuleError` naming it and how to install it.

Every access looks in ``sys.modules`` again (a dictionary look-up once imported), so a test
that swaps a fake module into ``sys.modules`` is seen at once.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

from deploykit.errors import DeployKitError


class MissingModuleError(DeployKitError, ImportError):
    """An optional package is not installed (a user error, and still an ImportError)."""


class LazyModule:
    """A module imported when first used.

    Args:
        names: the module's import names, tried in order (a package's newer layout first).
        what: the package, as the error names it.
        install: how to install it, as the error says it.
    """

    def __init__(self, *names: str, what: str, install: str) -> None:
        self._names, self._what, self._install = names, what, install

    def module(self) -> ModuleType:
        """The imported module.

        Raises:
            MissingModuleError: none of the names imports; says why and how to install it.
        """
        for name in self._names:  # already imported (or a test's fake): no failed import of an older name per access
            mod = sys.modules.get(name)
            if mod is not None:
                return mod
        first: ImportError | None = None
        for name in self._names:
            try:
                return importlib.import_module(name)
            except ImportError as e:
                first = first or e
        raise MissingModuleError(f"{self._what} is not installed ({first}); {self._install}") from None

    def available(self) -> bool:
        """Whether the module imports (importing it)."""
        try:
            self.module()
        except ImportError:
            return False
        return True

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):  # copy/pickle probe dunders: never an import
            raise AttributeError(attr)
        return getattr(self.module(), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._names[0]}>"


def lazy_import(*names: str, what: str | None = None, install: str) -> LazyModule:
    """A :class:`LazyModule` for ``names`` (alternative import names, tried in order).

    Args:
        names: e.g. ``"cuda.bindings.runtime", "cuda.cudart"``.
        what: the package as errors name it (default: the first name).
        install: how to install it, e.g. ``"pip install 'deploykit[gpu]'"``.
    """
    return LazyModule(*names, what=what or names[0], install=install)
