"""Peak resident memory of compress and profile on the largest zoo models, before and after.

For every model, each command in its own process (its peak resident set from ``wait4``):
``deploykit compress SPEC --target-macs 0.5 --criterion l2`` (no data, no fine-tuning) and
``deploykit profile SPEC`` from an empty cache (the scan's single-layer sessions, the layer
grids, and the calibration, which holds every variant's ONNX Runtime session for interleaved
timing). Random weights. The *before* column holds rows of this script run from a checkout
of commit 4eb6efb (calibration variants and the self-check's pruned twin copied the model's
weights); the *after* column rows of this checkout. Both run with ``--results`` pointing at
the same folder; rows are keyed by code version.

    .venv/bin/python benchmarks/peak_memory.py [--models vgg11_bn]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, code_version, per_model_main, provenance, rows_of_version  # noqa: E402

JOB_VERSION = 1
SPECS = ["torchvision:vgg11_bn", "torchvision:wide_resnet50_2"]
VERSION = code_version(JOB_VERSION)
BEFORE = {"commit": "4eb6efb", "version": "fc149f53a499"}


def _peak(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Peak resident MB and wall seconds of ``cmd`` (it must succeed)."""
    # stderr to a file, not a pipe: progress bars would fill a pipe no one reads until wait4 returns.
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed: {err.read().decode(errors='replace')[-300:]}")
    return usage.ru_maxrss / 1024, seconds  # ru_maxrss is in KB on Linux


def job(spec: str, target: float, runs: int, threads: int) -> dict[str, Any]:
    """One model: compress and profile, each in a fresh process with an empty cache."""
    row: dict[str, Any] = {"model": spec}
    with tempfile.TemporaryDirectory(prefix="dk-mem-") as tmp:
        env = {**os.environ, "DEPLOYKIT_CACHE": tmp, "OMP_NUM_THREADS": str(threads),
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        base = [sys.executable, "-m", "deploykit"]
        row["compress_mb"], row["compress_s"] = _peak([*base, "compress", spec, "--target-macs", str(target), "--criterion",
                                                       "l2", "--out", f"{tmp}/out"], env)
        row["profile_mb"], row["profile_s"] = _peak([*base, "profile", spec, "--threads", str(threads)], env)
    row["load"] = round(os.getloadavg()[0], 1)
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}


def markdown(rows: list[dict], missing: list[str], args: argparse.Namespace) -> str:
    before = rows_of_version(Path(args.results), BEFORE["version"])
    lines = ["# Peak memory of compress and profile, before and after", "",
             *provenance(" ".join(["python benchmarks/peak_memory.py", *sys.argv[1:]]), VERSION),
             f"Each command in a fresh process with an empty cache, random weights, {args.threads} thread: `deploykit "
             f"compress SPEC --target-macs {args.target} --criterion l2` and `deploykit profile SPEC`. MB: peak resident "
             f"set (`wait4`). Before: commit {BEFORE['commit']} (code version {BEFORE['version']}), the same script; after: this code version. Load: the "
             "1-minute load average when the row ended (2 cores).", ""]
    if missing:
        lines += [f"**Partial**: not yet run at this code version: {', '.join(missing)}.", ""]
    lines += ["| model | compress MB before | after | profile MB before | after | profile s before | after | load before / after |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        b = before.get(r["model"], {})
        lines.append(f"| {r['model']} | {b.get('compress_mb', '–')} | **{r['compress_mb']}** | {b.get('profile_mb', '–')} | "
                     f"**{r['profile_mb']}** | {b.get('profile_s', '–')} | {r['profile_s']} | {b.get('load', '–')} / {r['load']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    per_model_main(__file__, __doc__.splitlines()[0], SPECS, VERSION, "peak_memory", 1, job, markdown)


if __name__ == "__main__":
    main()
