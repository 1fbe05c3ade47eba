"""Options and helpers shared by the subcommands."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from deploykit.atomic import check_writable, write_json

F = Callable[..., Any]


def _writable_json(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    # Checked while parsing, so an unwritable --json fails before any work, not after it.
    if value is not None:
        check_writable(value, "--json")
    return value


def json_option(f: F) -> F:
    """``--json PATH``: write the machine-readable result there (its place is checked before any work)."""
    return click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), callback=_writable_json,
                        help="Write the machine-readable result to this file.")(f)


def trust_option(f: F) -> F:
    """``--trust-factory``: the opt-in to run a factory that a file (plan.json) names."""
    return click.option("--trust-factory", is_flag=True,
                        help="Let an artifact's plan.json name a package.module:function factory: deploykit imports and "
                        "runs that code. Only for artifacts you trust; registered families (cifar:, torchvision:, ...) "
                        "never need it, and a factory you name as MODEL yourself runs without it.")(f)


def model_options(f: F) -> F:
    """``--weights``, ``--input-shape`` and ``--trust-factory``."""
    f = trust_option(f)
    f = click.option("--input-shape", help="Example input shape, e.g. 1x3x224x224.")(f)
    return click.option("--weights", help="Weights file (.safetensors or a torch checkpoint).")(f)


def ignore_option(f: F) -> F:
    """``--ignore MODULE`` (repeatable)."""
    return click.option("--ignore", multiple=True, metavar="MODULE",
                        help="Module path to leave untouched (repeatable; covers its submodules).")(f)


MODEL_HELP = "MODEL: torchvision:NAME, cifar:resnet20|32|44|56, digits:demo, an artifact DIR, or package.module:factory."


def emit(result: dict[str, Any], json_path: Path | None) -> None:
    """Write ``result`` to ``--json`` when given."""
    if json_path is not None:
        write_json(json_path, result)


def out(line: str = "") -> None:
    """A line of human-readable output on stdout."""
    sys.stdout.write(line + "\n")


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return "-" if v is None else str(v)


def human(n: float, unit: str = "") -> str:
    """1234567 → '1.23M'."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def dumps(obj: Any) -> str:
    """Compact JSON for logs."""
    return json.dumps(obj, separators=(",", ":"))
