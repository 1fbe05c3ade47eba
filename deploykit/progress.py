"""Progress reporting that the CLI renders with rich and the Python API can silence."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Protocol


class Task(Protocol):
    """A running task: ``advance`` it, optionally with a status text."""

    def advance(self, n: int = 1, status: str | None = None) -> None: ...


class Reporter:
    """Silent reporter (the API default)."""

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Task]:
        """A progress task of ``total`` steps."""
        yield _NullTask()

    def log(self, message: str) -> None:
        """An informational line."""


class _NullTask:
    def advance(self, n: int = 1, status: str | None = None) -> None:
        pass


class RichReporter(Reporter):
    """Progress bars and log lines on stderr through rich."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(file=sys.stderr)

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Task]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
        )
        with Progress(*columns, console=self.console, transient=False) as progress:
            tid = progress.add_task(description, total=total, status="")

            class _T:
                def advance(self, n: int = 1, status: str | None = None) -> None:
                    progress.update(tid, advance=n, **({"status": status} if status is not None else {}))

            yield _T()

    def log(self, message: str) -> None:
        self.console.print(message, markup=False, highlight=False)
