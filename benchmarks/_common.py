"""What every benchmark script shares: the code version rows are keyed by, provenance lines, a row cache.

A row's key is a hash of the code that computes it and of every setting, so a table never
mixes rows of different code: a changed package or setting is a missing row, not a stale one.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ("torch", "torchvision", "torch-pruning", "onnxruntime")


def code_version(job_version: int) -> str:
    """Hash of the deploykit package in this checkout, the script's ``job_version`` and the libraries' versions."""
    h = hashlib.sha256(f"job-version={job_version}".encode())
    for p in sorted((ROOT / "deploykit").rglob("*.py")):
        h.update(str(p.relative_to(ROOT)).encode())
        h.update(p.read_bytes())
    for pkg in LIBRARIES:
        h.update(f"{pkg}={md.version(pkg)}".encode())
    return h.hexdigest()[:12]


def git_commit() -> str:
    """``HEAD``'s short hash, ``+dirty`` when tracked files of the package or benchmarks differ from it
    (new results files are not a change of code)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "deploykit", "benchmarks"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def provenance(command: str, version: str) -> list[str]:
    """Markdown lines: the command, machine, date, code version and library versions."""
    libs = ", ".join(f"{p} {md.version(p)}" for p in LIBRARIES)
    return [f"Command: `{command}`", "",
            f"Machine: {platform.machine()} CPU, {os.cpu_count()} cores; Python {platform.python_version()}; {libs}. "
            f"Date: {datetime.now(timezone.utc).date()}. Code version {version} (commit {git_commit()}).", ""]


def row_key(version: str, settings: dict[str, Any]) -> str:
    """A file-name-safe key of ``settings`` at ``version``."""
    digest = hashlib.sha256(json.dumps({"version": version, **settings}, sort_keys=True).encode()).hexdigest()[:10]
    name = "_".join(str(v) for v in settings.values() if isinstance(v, (str, int, float)))
    return f"{''.join(c if c.isalnum() or c in '.-' else '-' for c in name)[:80]}_{digest}"


def read_row(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def write_row(path: Path, row: dict[str, Any]) -> None:
    """Write a finished row atomically (a killed run leaves no half row)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(row, indent=1))
    tmp.replace(path)


def run_child(args: list[str], log: Path, threads: int = 1, env: dict[str, str] | None = None) -> int:
    """Run this interpreter on ``args`` with ``threads`` math threads, output to ``log``; its exit code."""
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), **(env or {})}
    with log.open("w") as f:
        return subprocess.run([sys.executable, *args], stdout=f, stderr=subprocess.STDOUT, env=full_env).returncode
