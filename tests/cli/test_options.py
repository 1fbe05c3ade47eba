"""The shared option groups (deploykit.cli.options): --backend help comes from each command's
registry, both --threads forms parse as before, and starting the CLI imports no registry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import deploykit
from deploykit.cli.main import main


@pytest.mark.parametrize("command, registry", [
    ("bench", "deploykit.runtime.backends:RUNNERS"),
    ("eval", "deploykit.runtime.backends:RUNNERS"),
    ("profile", "deploykit.bench.latency_table.timers:TIMERS"),
])
def test_backend_help_lists_the_commands_registry(command, registry, capsys):
    import importlib

    from deploykit.runtime.backends import BACKENDS

    module, _, name = registry.partition(":")
    names = getattr(importlib.import_module(module), name).names()
    assert main([command, "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")  # unwrapped (click wraps after hyphens)
    for n in names:
        desc = BACKENDS.get(n).description
        assert (f"{n} ({desc})" if desc else n) in help_text, n


@pytest.mark.parametrize("text, expected", [("default", None), (" 4 ", 4), ("DEFAULT", None)])
def test_single_thread_count(text, expected):
    from deploykit.cli.options import parse_thread_count

    assert parse_thread_count(text) == expected


def test_thread_count_sweep():
    from deploykit.cli.options import parse_thread_counts

    assert parse_thread_counts(None) == (None,)
    assert parse_thread_counts("4,1,4") == (4, 1)


def test_starting_the_cli_imports_neither_numpy_nor_torch():
    code = "import sys, deploykit.cli.main; print(sorted({'numpy', 'torch'} & set(sys.modules)))"
    root = Path(deploykit.__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                          timeout=60, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr
