"""Progress reporting that the CLI renders with rich and the Python API can silence."""

from __future__ import annotations

import contextlib
import sys
import time
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


class Timings:
    """Wall seconds per phase of a run, in the order the phases first ran (report.json ``timings``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block; a phase entered again adds up."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    def to_dict(self) -> dict[str, float]:
        """Seconds per phase, rounded to milliseconds."""
        return {k: round(v, 3) for k, v in self.seconds.items()}
