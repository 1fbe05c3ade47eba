"""Peak memory of running a model, measured in a fresh process.

A process that has already run other models keeps their freed memory and reuses it,
so the growth of its resident set says little about the next model; a fresh process
does not have that problem. :func:`peak_memory` starts ``python -m
deploykit.bench.memory`` for one (model, backend, batch, threads) and reads back the
peak resident memory (``VmHWM``) above what the process held before loading the model.

This module imports only the standard library and numpy at import time: the probe for
ONNX Runtime must not pay for importing torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
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


def _probe_ort(path: str, batch: int, threads: int | None, runs: int) -> None:
    import numpy as np

    from deploykit.export.session import ort_session

    sess = ort_session(path, threads, quiet=True)
    types = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8, "tensor(int64)": np.int64}
    feed = {}
    for i in sess.get_inputs():
        shape = [batch if k == 0 else (d if isinstance(d, int) and d > 0 else 1) for k, d in enumerate(i.shape)]
        feed[i.name] = np.zeros(shape, dtype=types.get(i.type, np.float32))
    for _ in range(runs):
        sess.run(None, feed)


def _probe_torch(path: str, batch: int, threads: int | None, runs: int) -> None:
    import numpy as np
    import torch

    from deploykit.runtime.backends import load_runner

    if threads:
        torch.set_num_threads(threads)
    with load_runner(path, backend="torch") as r:
        feed = {m.name: np.zeros(tuple(batch if d is None else d for d in m.shape), dtype=m.dtype)
                for m in r.get_input_metadata().values()}
        for _ in range(runs):
            r.infer(feed)


# Backends whose host memory a fresh process can measure.
PROBES: dict[str, Callable[[str, int, int | None, int], None]] = {"ort": _probe_ort, "torch": _probe_torch}


def probe(path: str, backend: str, batch: int, threads: int | None, runs: int = 3) -> dict[str, float | None]:
    """In this process: load and run the model, return peak and baseline resident MiB."""
    if backend == "torch":
        import torch  # noqa: F401  (imported before the baseline: the framework is not the model's memory)
    base = _status_kb("VmRSS")
    _reset_peak()  # where not allowed, the peak may predate the model: still an upper bound
    PROBES[backend](path, batch, threads, runs)
    hwm = _status_kb("VmHWM")
    if base is None or hwm is None:
        return {"peak_mb": None, "baseline_mb": None}
    return {"peak_mb": round((hwm - base) / 1024, 2), "baseline_mb": round(base / 1024, 2)}


def peak_memory(path: str | Path, backend: str, batch: int, threads: int | None, timeout: float = 300) -> float | None:
    """Peak resident MiB above the process baseline while ``path`` loads and runs; None where not measurable."""
    if backend not in PROBES or not Path("/proc/self/status").exists():
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
