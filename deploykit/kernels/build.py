"""Ahead-of-time build of the ``.cu`` kernels with nvcc, and a check of what it produced.

``python -m deploykit.kernels.build [--out DIR] [--arch 75,86,87,90]`` writes one
fatbin per source with SASS for each architecture (Turing, Ampere desktop, Orin, Hopper)
and PTX for the newest so later GPUs can JIT it; then it reads the architectures back
out of each fatbin and fails when one is missing. At run time the Engine compiles the
same sources with NVRTC for the device's own architecture instead (see :mod:`.nvrtc`),
which also covers Xavier (sm_72) on JetPack 5, where nvcc 13 cannot target it.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

from deploykit.errors import DeployKitError
from deploykit.kernels import sources
from deploykit.kernels.fatbin import archs

DEFAULT_ARCHS = (75, 86, 87, 90)
NVCC_FLAGS = ("-fatbin", "--fmad=false", "-std=c++17", "-O3")


def nvcc() -> str | None:
    """Path of nvcc ($CUDA_HOME/bin or PATH), or None."""
    return shutil.which("nvcc")


def supported_archs(nvcc_path: str) -> set[int]:
    """The ``compute_XX`` architectures this nvcc accepts (``nvcc --list-gpu-arch``)."""
    out = subprocess.run([nvcc_path, "--list-gpu-arch"], capture_output=True, text=True, check=True).stdout
    return {int(m) for m in re.findall(r"compute_(\d+)", out)}


def gencode(arch_list: tuple[int, ...]) -> list[str]:
    """``-gencode`` flags: SASS for each, plus PTX of the newest for forward compatibility."""
    flags = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in arch_list]
    newest = max(arch_list)
    flags.append(f"-gencode=arch=compute_{newest},code=compute_{newest}")
    return flags


def build(out_dir: str | Path, arch_list: tuple[int, ...] = DEFAULT_ARCHS) -> dict[str, dict[str, list[int]]]:
    """Compile every ``.cu`` to ``OUT/NAME.fatbin`` and verify its architectures.

    Returns:
        ``{fatbin path: {"sass": [...], "ptx": [...]}}``.

    Raises:
        DeployKitError: no nvcc, an architecture nvcc cannot target, a failed compile, or
            a fatbin missing an architecture that was asked for.
    """
    path = nvcc()
    if path is None:
        raise DeployKitError("nvcc not found on PATH; install the CUDA toolkit or set PATH")
    missing = sorted(set(arch_list) - supported_archs(path))
    if missing:
        raise DeployKitError(
            f"this nvcc cannot target sm_{', sm_'.join(map(str, missing))} (nvcc --list-gpu-arch); "
            "build on the device with its own CUDA (the Engine compiles through NVRTC there)"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {}
    for name in sources.CUDA_SOURCES:
        target = out / (Path(name).stem + ".fatbin")
        tmp = target.with_suffix(".fatbin.tmp")
        cmd = [path, *NVCC_FLAGS, f"-I{sources.include_dir()}", *gencode(arch_list),
               str(sources.kernels_dir() / name), "-o", str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip()[:300])
            raise DeployKitError(f"nvcc failed on {name}: {first}")
        tmp.replace(target)
        found = archs(target)
        lacking = sorted(set(arch_list) - set(found["sass"]))
        if lacking or max(arch_list) not in found["ptx"]:
            raise DeployKitError(f"{target} lacks SASS for {lacking} or PTX for {max(arch_list)}: has {found}")
        report[str(target)] = found
    return report


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (used by ``make kernels``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(sources.cache_dir() / "nvcc"), help="output directory for the fatbins")
    ap.add_argument("--arch", default=",".join(map(str, DEFAULT_ARCHS)), help="SM architectures, e.g. 75,86,87,90")
    args = ap.parse_args(argv)
    try:
        report = build(args.out, tuple(int(a) for a in args.arch.split(",")))
    except DeployKitError as e:
        print(f"kernels: error: {e}", file=sys.stderr)
        return 2
    for target, found in report.items():
        print(f"{target}: SASS sm_{', sm_'.join(map(str, found['sass']))}; PTX compute_{', compute_'.join(map(str, found['ptx']))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
