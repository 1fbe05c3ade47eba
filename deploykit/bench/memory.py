"""Peak memory of running a model, measured in a fresh process.

A process that has already run other models keeps their freed memory and reuses it,
so the growth of its resident set says little about the next model; a fresh process
does not have that problem. :func:`peak_memory` starts ``python -m
deploykit.bench.memory`` for one (model, backend, batch, threads) and reads back the
peak resident memory (``VmHWM``) above what the process held before loading the model.

Backends whose memory a process's resident set shows say so in their registry record
(``host_memory``); the others (TensorRT's GPU memory) get None. This module imports only the
standard library at import time: the probe for ONNX Runtime must not pay for importing torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

MIB = 2**20


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _reset_peak() -> bool:
    """Reset ``VmHWM`` to the current resident size (Linux ``clear_refs``); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _run(path: str, backend: str, batch: int, threads: int | None, runs: int) -> None:
    import numpy as np

    from deploykit.runtime.backends import RUNNERS

    b = RUNNERS.get(backend)
    with b.threads(threads), b.open(path, threads) as r:
        feed = {m.name: np.zeros(m.concrete_shape(batch), dtype=m.dtype) for m in r.get_input_metadata().values()}
        for _ in range(runs):
            r.infer(feed)


def probe(path: str, backend: str, batch: int, threads: int | None, runs: int = 3) -> dict[str, float | None]:
    """In this process: load and run the model, return peak and baseline resident MiB."""
    from deploykit.runtime.backends import RUNNERS

    RUNNERS.get(backend).runner_class()  # its framework is imported before the baseline: not the model's memory
    base = _status_kb("VmRSS")
    _reset_peak()  # where not allowed, the peak may predate the model: still an upper bound
    _run(path, backend, batch, threads, runs)
    hwm = _status_kb("VmHWM")
    if base is None or hwm is None:
        return {"peak_mb": None, "baseline_mb": None}
    return {"peak_mb": round((hwm - base) / 1024, 2), "baseline_mb": round(base / 1024, 2)}


def peak_memory(path: str | Path, backend: str, batch: int, threads: int | None, timeout: float = 300) -> float | None:
    """Peak resident MiB above the process baseline while ``path`` loads and runs; None where not measurable."""
    from deploykit.runtime.backends import RUNNERS

    if backend not in RUNNERS or not RUNNERS.get(backend).host_memory or not Path("/proc/self/status").exists():
        return None
    args = json.dumps({"path": str(path), "backend": backend, "batch": batch, "threads": threads})
    try:
        proc = subprocess.run([sys.executable, "-m", "deploykit.bench.memory", args], capture_output=True, text=True,
                              timeout=timeout, check=False)
        return json.loads(proc.stdout.strip().splitlines()[-1])["peak_mb"] if proc.returncode == 0 else None
    except (subprocess.TimeoutExpired, json.JSONDecodeError, IndexError, KeyError, OSError):
        return None


if __name__ == "__main__":
    a = json.loads(sys.argv[1])
    print(json.dumps(probe(a["path"], a["backend"], int(a["batch"]), a.get("threads"))))
