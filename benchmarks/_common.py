"""What every benchmark script shares: the code version rows are keyed by, provenance lines, a row cache.

A row's key is a hash of the code that computes it and of every setting, so a table never
mixes rows of different code: a changed package or setting is a missing row, not a stale one.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import json
import os
import platform
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# This checkout's deploykit, not the one the venv was installed from: benchmarks run from pinned worktrees,
# and code_version() hashes this checkout's files.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
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
    (results files, new or rewritten, are not a change of code)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "deploykit", "benchmarks",
                                ":(exclude)benchmarks/results"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def provenance(command: str, version: str, commit: str | None = None) -> list[str]:
    """Markdown lines: the command, machine, date, code version and library versions.

    ``commit`` names where the results were computed when that is not this checkout (a table rendered from rows
    of a pinned worktree); by default this checkout's ``HEAD``.
    """
    libs = ", ".join(f"{p} {md.version(p)}" for p in LIBRARIES)
    return [f"Command: `{command}`", "",
            f"Machine: {platform.machine()} CPU, {os.cpu_count()} cores; Python {platform.python_version()}; {libs}. "
            f"Date: {datetime.now(timezone.utc).date()}. Code version {version} ({commit or f'commit {git_commit()}'}).", ""]


def export_round_to_variants(spec: str, target: float, round_tos: tuple[int | str, ...], tmp: Path
                             ) -> tuple[dict[str, Path], dict[str, dict[str, Any]]]:
    """The base and ``compress --target-macs target --criterion l2 --round-to R`` for each R, exported to ONNX.

    Returns:
        ONNX paths by ``base`` / ``rtR``, and per ``rtR`` its MACs ratio or the error that stopped it.
    """
    import deploykit
    from deploykit.export.onnx import export_onnx
    from deploykit.zoo import build_model

    paths, out = {"base": tmp / "base.onnx"}, {}
    export_onnx(build_model(spec, pretrained=False), paths["base"])
    for r in round_tos:
        try:
            report = deploykit.compress(model=spec, out=str(tmp / f"rt{r}"), target_macs=target, criterion="l2", round_to=r)
        except Exception as e:  # noqa: BLE001 - recorded as this setting's failure
            out[f"rt{r}"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:100]}"}
            continue
        paths[f"rt{r}"] = tmp / f"rt{r}.onnx"
        export_onnx(deploykit.load(str(tmp / f"rt{r}")), paths[f"rt{r}"])
        out[f"rt{r}"] = {"macs": report["ratios"]["macs"]}
    return paths, out


def row_key(version: str, settings: dict[str, Any]) -> str:
    """A file-name-safe key of ``settings`` at ``version``."""
    digest = hashlib.sha256(json.dumps({"version": version, **settings}, sort_keys=True).encode()).hexdigest()[:10]
    name = "_".join(str(v) for v in settings.values() if isinstance(v, (str, int, float)))
    return f"{''.join(c if c.isalnum() or c in '.-' else '-' for c in name)[:80]}_{digest}"


def read_row(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def rows_of_version(results: Path, version: str) -> dict[str, dict[str, Any]]:
    """The rows in ``results`` computed at code ``version``, by model (a *before* column's rows)."""
    rows = {}
    for p in results.glob("*.json"):
        row = read_row(p)
        if row and row.get("version") == version:
            rows[row["model"]] = row
    return rows


def write_row(path: Path, row: dict[str, Any]) -> None:
    """Write a finished row atomically (a killed run leaves no half row)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(row, indent=1))
    tmp.replace(path)


def write_results(out: str | Path, md: str, payload: dict[str, Any]) -> None:
    """A benchmark's results: the markdown at ``out``, ``payload`` beside it as JSON (each written
    atomically), and the markdown on stdout."""
    out = Path(out)
    for path, text in ((out, md), (out.with_suffix(".json"), json.dumps(payload, indent=1))):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    print(md)


# Rounds per block of the fastest-block latency estimator (deploykit.bench.latency.fastest_block).
BLOCK = 20


def time_efficiencies(row: dict[str, Any], paths: dict[str, Path], runs: int, threads: int) -> None:
    """Time the ONNX files of ``paths`` (one named ``base``) interleaved on ONNX Runtime CPU, batch 1.

    Writes each file's median and fastest-block time (``p50_ms``, ``block_ms``) into ``row`` and, for
    every other name with a row entry holding its ``macs`` ratio, its latency ratio (fastest blocks: slow
    spells of a shared machine add a fixed cost to every run that a ratio of medians does not cancel)
    and realized efficiency (1 - latency) / (1 - MACs), with the p50 ratio's beside them.
    """
    from deploykit.bench.latency import fastest_block, onnx_times

    times = onnx_times(list(paths.values()), 1, runs=runs, warmup=10, threads=threads)
    ms = {name: times[str(p)] for name, p in paths.items()}
    row["p50_ms"] = {name: round(statistics.median(t) * 1e3, 4) for name, t in ms.items()}
    row["block_ms"] = {name: round(fastest_block(t, BLOCK) * 1e3, 4) for name, t in ms.items()}
    for name in paths:
        r = row.get(name)
        if name == "base" or not isinstance(r, dict) or "macs" not in r:
            continue
        for key, source in (("", "block_ms"), ("_p50", "p50_ms")):
            r["latency" + key] = row[source][name] / row[source]["base"]
            r["efficiency" + key] = (1 - r["latency" + key]) / max(1 - r["macs"], 1e-9)


def run_child(args: list[str], log: Path, threads: int = 1, env: dict[str, str] | None = None) -> int:
    """Run this interpreter on ``args`` with ``threads`` math threads, output to ``log``; its exit code."""
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), **(env or {})}
    with log.open("w") as f:
        return subprocess.run([sys.executable, *args], stdout=f, stderr=subprocess.STDOUT, env=full_env).returncode


def per_model_main(script: str, description: str, specs: list[str], version: str, name: str, runs: int,
                   job: Callable[[str, float, int, int], dict[str, Any]],
                   markdown: Callable[[list[dict], list[str], argparse.Namespace], str]) -> None:
    """The command line of a benchmark with one cached row per model, each computed in its own process.

    Args:
        script: the benchmark's ``__file__`` (a row's child process runs it with ``--job``).
        specs: every model spec; ``--models`` selects by spec or by the name after the colon.
        name: results are ``benchmarks/results/NAME.{md,json}``, rows ``NAME_rows/``, logs ``/tmp/dk-NAME-logs``.
        runs: the default of ``--runs``.
        job: ``(spec, target, runs, threads) -> row``.
        markdown: ``(rows, missing specs, args) -> the table``.
    """
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--models", help="comma-separated subset (names or specs)")
    ap.add_argument("--runs", type=int, default=runs)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / name))
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / f"{name}_rows")
    ap.add_argument("--job", help=argparse.SUPPRESS)
    args = ap.parse_args()
    settings = ["--runs", str(args.runs), "--threads", str(args.threads), "--target", str(args.target)]
    if args.job:
        spec, out = json.loads(args.job)
        write_row(Path(out), {**job(spec, args.target, args.runs, args.threads), "version": version})
        return
    chosen = args.models.split(",") if args.models else None
    if chosen is not None:
        # A full spec outside the benchmark's list is run too; a bare name must be one of the list's.
        unknown = [c for c in chosen if ":" not in c and c not in {s.split(":", 1)[1] for s in specs}]
        if unknown:
            ap.error(f"--models {','.join(unknown)}: not in this benchmark's list ({', '.join(specs)}); "
                     "give another model as a full spec, e.g. torchvision:vgg11_bn")
        specs = [s for s in specs if s in chosen or s.split(":", 1)[1] in chosen] + [
            c for c in chosen if ":" in c and c not in specs]
    logs = Path(f"/tmp/dk-{name}-logs")
    rows, missing = [], []
    for spec in specs:
        path = args.results / f"{row_key(version, {'spec': spec, 'target': args.target, 'runs': args.runs, 'threads': args.threads})}.json"
        if read_row(path) is None:
            rc = run_child([script, "--job", json.dumps([spec, str(path)]), *settings], logs / f"{path.stem}.log",
                           threads=args.threads)
            print(f"{spec}: {'ok' if rc == 0 else f'FAILED rc={rc} (log {logs}/{path.stem}.log)'}", flush=True)
        row = read_row(path)
        (rows.append(row) if row else missing.append(spec))
        Path(args.out + ".json").write_text(json.dumps(rows, indent=2) + "\n")
        Path(args.out + ".md").write_text(markdown(rows, [s for s in specs if s not in [r["model"] for r in rows]], args))
    print(markdown(rows, missing, args))
