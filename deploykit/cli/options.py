"""The option groups that say where and how a model runs: ``--backend`` and ``--threads``.

Each group is defined once, after Polygraphy's argument groups (``tools/args``): a function
adds the flag to a command and parses its value, so every subcommand that takes the flag
spells, documents and checks it alike. The backends a command accepts are the names of a view
of the one backend registry (:mod:`deploykit.runtime.backends`: the backends with a runner, or
those with a latency timer); the help lists them, each with its description, only when
``--help`` is shown, so starting the CLI imports no registry, nor numpy and torch with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from deploykit.errors import DeployKitError
from deploykit.registry import resolve

F = Callable[..., Any]


class _LazyHelpOption(click.Option):
    """An option whose help text is made when help is shown, not when the command is defined."""

    def __init__(self, *args: Any, make_help: Callable[[], str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._make_help = make_help

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        self.help = self._make_help()
        return super().get_help_record(ctx)


def backend_choices(registry: str) -> str:
    """The names ``registry`` (``"module:NAME"``) holds, each with what it is, e.g.
    ``ort (ONNX Runtime, CPU), torch (PyTorch)``."""
    from deploykit.runtime.backends import describe

    return ", ".join(describe(n) for n in resolve(registry).names())


def backend_option(registry: str, purpose: str, default: str | None = None,
                   without: str | None = None) -> Callable[[F], F]:
    """``--backend NAME``: one of the backends a command runs models on.

    Args:
        registry: ``"module:NAME"`` of the :class:`~deploykit.registry.Registry` the command looks
            the backend up in; imported only when the flag is given or help is shown.
        purpose: what the backend is for: the help's first words.
        default: the backend used without the flag.
        without: what happens without the flag, where ``default`` is None.

    Returns:
        A decorator adding the option; the command receives the name (or ``default``).
    """

    def check(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        # While parsing, so an unknown name fails before any work; the registry's error lists the valid ones.
        if value is not None:
            resolve(registry).get(value)
        return value

    def make_help() -> str:
        text = f"{purpose}: {backend_choices(registry)}."
        return text if default is not None or without is None else f"{text} Without it: {without}."

    return click.option("--backend", default=default, show_default=default is not None, metavar="NAME",
                        callback=check, cls=_LazyHelpOption, make_help=make_help)


def positive_ints(text: str, flag: str, example: str) -> list[int]:
    """``"1,8"`` → ``[1, 8]`` (duplicates dropped, order kept); anything else is a user error naming ``flag``."""
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        vals = []
    if not vals or any(v <= 0 for v in vals):
        raise DeployKitError(f"{flag} {text!r} must be positive integers separated by commas, e.g. {example}")
    return list(dict.fromkeys(vals))


def parse_thread_counts(text: str | None) -> tuple[int | None, ...]:
    """``"1,2"`` → ``(1, 2)``; absent → ``(None,)``, the runtime's choice."""
    return (None,) if text is None else tuple(positive_ints(text, "--threads", "1,2"))


def parse_thread_count(text: str) -> int | None:
    """``"4"`` → ``4``; ``"default"`` → None, the runtime's choice."""
    word = text.strip()
    if word.lower() == "default":
        return None
    if word.isdigit() and int(word) > 0:
        return int(word)
    raise DeployKitError(f"--threads {text!r}: give a positive integer or 'default'")


def threads_option(sweep: bool) -> Callable[[F], F]:
    """``--threads``: intra-op threads, a sweep of counts or a single one.

    The two forms are kept as the commands always took them: ``bench`` times every count of
    ``--threads 1,2,4`` and by default leaves the count to the runtime; ``profile`` measures
    one table at one count (``--threads 4``, or ``default`` for the runtime's choice), 1 by
    default, because a latency table is keyed by its thread count and one thread measures
    most steadily.

    Args:
        sweep: take a comma-separated list (the command receives a tuple, ``(None,)`` for the
            runtime's choice) instead of one count (the command receives an int, or None).

    Returns:
        A decorator adding the option.
    """
    if sweep:
        return click.option("--threads", metavar="N[,N...]",
                            callback=lambda ctx, param, value: parse_thread_counts(value),
                            help="Intra-op thread counts to time, comma separated, e.g. 1,2,4 "
                                 "(default: the runtime's choice).")
    return click.option("--threads", default="1", show_default=True, metavar="N|default",
                        callback=lambda ctx, param, value: parse_thread_count(value),
                        help="Intra-op threads: one count, or 'default' for the runtime's choice.")
