"""A self-contained folder that builds and benchmarks the model on a Jetson (or any
machine with TensorRT), with nothing of deploykit installed there.

``deploykit export DIR --bundle jetson OUT_DIR`` writes::

    model.onnx, model.onnx.json   the model in its final precision, with its sidecar
    reference/                    input.bin / output.bin (raw little-endian float32) and
                                  .npy copies: a batch of real (or seeded random) inputs and
                                  the outputs ONNX Runtime gives for them
    kernels/                      the CUDA pre/post-processing sources (NVRTC-compilable)
    run.sh                        build the engine with trtexec, check it against the
                                  reference, benchmark it (warm-up, duration, percentiles,
                                  CUDA graphs), record power mode, clocks and versions
    summarize.py                  (stdlib only) trtexec outputs -> results.json
    results.schema.json           the JSON Schema of results.json
    manifest.json                 what was bundled, with SHA-256 of every file

``deploykit bench --import OUT/results.json`` reads the results back into the report
format of local benchmarks. ``run.sh``, ``summarize.py`` and ``README.md`` are files of
``bundle_templates/`` (package data, so shellcheck and Python linters check them as they
are), filled in by :func:`render_template`.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from deploykit.atomic import atomic_dir
from deploykit.errors import DeployKitError
from deploykit.registry import Registry

RESULTS_SCHEMA_ID = "deploykit-bench/1"
# Max relative difference (scale-normalized) and minimum top-1 agreement accepted between
# TensorRT on the device and ONNX Runtime here. fp32 allows TF32, which TensorRT enables
# by default on Ampere and newer.
TOLERANCES = {"fp32": (2e-2, 90.0), "fp16": (5e-2, 90.0), "int8": (0.25, 80.0)}

Writer = Callable[..., dict[str, Any]]
BUNDLES: Registry[Writer] = Registry("bundle target")

# run.sh, summarize.py and README.md of a bundle, shipped as package data (pyproject.toml).
TEMPLATES_DIR = "bundle_templates"
PLACEHOLDER = re.compile(r"@@([A-Z][A-Z0-9_]*)@@")

RESULTS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": RESULTS_SCHEMA_ID,
    "title": "deploykit benchmark results (imported with deploykit bench --import)",
    "type": "object",
    "additionalProperties": False,
    "required": ["schema", "source", "model", "precision", "created", "device", "settings", "results"],
    "properties": {
        "schema": {"const": RESULTS_SCHEMA_ID},
        "source": {"type": "string"},
        "model": {"type": "string"},
        "precision": {"enum": ["fp32", "fp16", "int8"]},
        "created": {"type": "string"},
        "device": {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
        "settings": {
            "type": "object",
            "additionalProperties": False,
            "required": ["warmup_ms", "duration_s", "cuda_graph", "batches"],
            "properties": {
                "warmup_ms": {"type": "number"}, "duration_s": {"type": "number"},
                "cuda_graph": {"type": "boolean"}, "batches": {"type": "array", "items": {"type": "integer"}},
            },
        },
        "reference_check": {"type": ["object", "null"]},
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["model", "batch", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "throughput"],
                "properties": {
                    "model": {"type": "string"}, "batch": {"type": "integer", "minimum": 1},
                    "p50_ms": {"type": "number"}, "p90_ms": {"type": "number"}, "p99_ms": {"type": "number"},
                    "mean_ms": {"type": "number"}, "std_ms": {"type": "number"}, "throughput": {"type": "number"},
                    "gpu_compute_p50_ms": {"type": "number"}, "runs": {"type": "integer"},
                },
            },
        },
    },
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def render_template(name: str, values: Mapping[str, object]) -> str:
    """A file of ``bundle_templates/`` with every ``@@KEY@@`` replaced by ``values[KEY]``.

    The placeholders are plain words inside strings and comments, so the templates stay valid
    for shellcheck and Python linters as they are shipped.

    Args:
        name: the template's file name, e.g. ``run.sh``.
        values: what each placeholder stands for (``str()`` of it is written).

    Raises:
        KeyError: the template has a placeholder that ``values`` lacks (a bug, not a user error).
    """
    text = (resources.files(__package__) / TEMPLATES_DIR / name).read_text(encoding="utf-8")

    def value(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise KeyError(f"bundle template {name} has @@{key}@@, which nothing fills")
        return str(values[key])

    # One pass: a value that itself holds "@@...@@" (say, a model name) is written as it is.
    return PLACEHOLDER.sub(value, text)


@BUNDLES.register("jetson")
def write_jetson_bundle(onnx_path: str | Path, out_dir: str | Path, reference_inputs: np.ndarray,
                        max_batch: int = 8, batches: tuple[int, ...] = (1, 8), workspace_mib: int = 1024,
                        force: bool = False) -> dict[str, Any]:
    """Write the bundle for ``onnx_path`` (final precision, with its sidecar) to ``out_dir``.

    Args:
        reference_inputs: a preprocessed NCHW float32 batch (real images where possible);
            ONNX Runtime's outputs for it become the reference the device must match.
        max_batch: the largest batch of the engine's optimization profile.
        batches: batch sizes the script benchmarks by default.
        force: replace a non-empty ``out_dir`` (only once the new bundle is complete).

    Returns:
        The manifest (also written as ``manifest.json``).
    """
    from deploykit import __version__
    from deploykit.export.onnx import INPUT_NAME, OUTPUT_NAME, ort_session, read_sidecar
    from deploykit.kernels import sources

    onnx_path = Path(onnx_path)
    side = read_sidecar(onnx_path)
    precision = side.get("precision", "fp32")
    x = np.ascontiguousarray(reference_inputs, dtype=np.float32)
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(side["input_shape"][1:]):
        raise DeployKitError(f"reference inputs of shape {x.shape} do not fit the model input {side['input_shape']}")
    if not 1 <= len(x) <= max_batch or any(not 1 <= b <= max_batch for b in batches):
        raise DeployKitError(f"reference batch {len(x)} and benchmark batches {batches} must lie in 1..{max_batch}")
    y = ort_session(onnx_path).run(None, {INPUT_NAME: x})[0].astype(np.float32)
    max_rel, min_agree = TOLERANCES[precision]
    kernel_files = sources.source_files()
    values = {
        "VERSION": __version__, "PRECISION": precision, "INPUT": INPUT_NAME,
        "SHAPE_TAIL": "x".join(str(d) for d in x.shape[1:]), "REF_BATCH": len(x), "MAX_BATCH": max_batch,
        "WORKSPACE_MIB": workspace_mib, "BATCHES": " ".join(map(str, batches)), "SCHEMA": RESULTS_SCHEMA_ID,
        "MODEL": side.get("source", onnx_path.name),
    }
    with atomic_dir(out_dir, force=force) as tmp:
        shutil.copyfile(onnx_path, tmp / "model.onnx")
        (tmp / "model.onnx.json").write_text(json.dumps(side, indent=2) + "\n")
        ref = tmp / "reference"
        ref.mkdir()
        # Raw little-endian float32: what trtexec --loadInputs reads and summarize.py parses.
        x.astype("<f4").tofile(ref / "input.bin")
        y.astype("<f4").tofile(ref / "output.bin")
        np.save(ref / "input.npy", x)
        np.save(ref / "output.npy", y)
        kdir = tmp / "kernels"
        root = sources.kernels_dir()
        for f in kernel_files:
            dest = kdir / f.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest)
        (tmp / "run.sh").write_text(render_template("run.sh", values))
        (tmp / "run.sh").chmod(0o755)
        (tmp / "summarize.py").write_text(render_template("summarize.py", values))
        (tmp / "results.schema.json").write_text(json.dumps(RESULTS_SCHEMA, indent=2) + "\n")
        (tmp / "README.md").write_text(render_template("README.md", values))
        manifest = {
            "bundle": "jetson", "deploykit": __version__, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": side.get("source", onnx_path.name), "precision": precision,
            "input": INPUT_NAME, "output": OUTPUT_NAME, "input_shape": [len(x), *x.shape[1:]], "output_shape": list(y.shape),
            "max_batch": max_batch, "batches": list(batches),
            "tolerance": {"max_rel_diff": max_rel, "top1_agreement": min_agree},
            "files": {str(p.relative_to(tmp)): _sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def write_bundle(target: str, onnx_path: str | Path, out_dir: str | Path, reference_inputs: np.ndarray,
                 **kwargs: Any) -> dict[str, Any]:
    """Write a bundle for ``target`` (see :data:`BUNDLES`)."""
    return BUNDLES.get(target)(onnx_path, out_dir, reference_inputs, **kwargs)
