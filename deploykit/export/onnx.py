"""Export to ONNX and verify it against PyTorch in ONNX Runtime.

The TorchScript-based exporter is chosen deliberately: on torch 2.14 the default
(dynamo) exporter writes opset 18 when asked for 17 on most torchvision models,
and prints a traceback while doing so. The opset actually written is read back
from the file and reported.
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deploykit.atomic import staged
from deploykit.errors import DeployKitError, ParityError
from deploykit.export.session import ort_session  # noqa: F401 - re-exported: imports keep working
from deploykit.export.sidecar import read_sidecar, sidecar_path  # noqa: F401 - re-exported: imports keep working
from deploykit.zoo.base import BuiltModel

INPUT_NAME = "input"
OUTPUT_NAME = "output"
DEFAULT_OPSET = 17
PARITY_TOLERANCE = 1e-4


def check_opset(opset: int) -> None:
    """Refuse an opset the exporter cannot write."""
    if not 7 <= opset <= 22:
        raise DeployKitError(f"opset {opset} is not supported; valid: 7..22 (default {DEFAULT_OPSET})")


def failed_path(onnx_path: str | Path) -> Path:
    """``OUT.failed.onnx``: where an export that failed its parity check is kept for inspection."""
    p = Path(onnx_path)
    stem = p.name[: -len(".onnx")] if p.name.endswith(".onnx") else p.name
    return p.with_name(f"{stem}.failed.onnx")


def export_onnx(built: BuiltModel, path: str | Path, opset: int = DEFAULT_OPSET, dynamic_batch: bool = True) -> dict[str, Any]:
    """Export ``built`` to ``path`` with its sidecar, run onnx.checker; both or neither are written.

    Both files are written under temporary names beside ``path`` and moved into
    place only when complete, the sidecar first and then the model (a reader that
    finds the new model also finds its description). On any error an existing
    ``path`` and sidecar are untouched.

    Returns:
        ``{"onnx": path, "opset": written opset}``.

    Raises:
        DeployKitError: a bad opset, ``path`` is a directory, or an operator the exporter cannot write.
    """
    check_opset(opset)
    if Path(path).is_dir():
        raise DeployKitError(f"ONNX output {path} is a directory; give the file to write, "
                             f"e.g. {Path(path) / 'model.onnx'}")
    with staged() as stage:
        side_tmp = stage.file(sidecar_path(path))
        model_tmp = stage.file(path)
        written, outputs = _export_model(built, model_tmp, opset, dynamic_batch)
        side_tmp.write_text(json.dumps(_sidecar(built, outputs, written), indent=2) + "\n")
    return {"onnx": str(path), "opset": written}


def export_checked(built: BuiltModel, work: Path, dest: str | Path, inputs: list[torch.Tensor],
                   opset: int = DEFAULT_OPSET) -> tuple[Path, dict[str, Any]]:
    """Export ``built`` into the scratch directory ``work`` and check it against PyTorch on ``inputs``.

    Nothing is written at ``dest``: the caller moves the returned file (and its
    sidecar) there once everything else it writes is complete, e.g. with
    :meth:`deploykit.atomic.Stage.put`.

    Returns:
        The checked model's path in ``work`` and ``{"onnx", "opset", "max_abs_diff", "max_rel_diff"}``.

    Raises:
        ParityError: the relative difference exceeds :data:`PARITY_TOLERANCE`; ``dest``
            is left as it was and the unverified model is kept only as ``OUT.failed.onnx``
            (:func:`failed_path`), with its sidecar, for inspection.
    """
    model_file = work / "fp32.onnx"
    result = export_onnx(built, model_file, opset=opset)
    result.update(check_parity(built.exported, model_file, inputs))
    if result["max_rel_diff"] > PARITY_TOLERANCE:
        kept = failed_path(dest)
        with staged() as failed:
            failed.put(sidecar_path(model_file), sidecar_path(kept))
            failed.put(model_file, kept)
        raise ParityError(f"parity check failed: max relative difference {result['max_rel_diff']:.3g} > "
                          f"{PARITY_TOLERANCE}; {dest} was not written (an existing one is unchanged); "
                          f"the unverified model is kept as {kept}")
    return model_file, result


def _sidecar(built: BuiltModel, outputs: list[str], opset: int) -> dict[str, Any]:
    side = {
        "source": built.spec,
        "base_spec": built.base_spec or built.spec,
        "input_shape": list(built.input_shape),
        "input": INPUT_NAME,
        "output": outputs[0],
        "outputs": outputs,
        "task": built.task,
        "opset": opset,
        "preprocess": built.preprocess.to_dict(),
        "labels": built.labels,
    }
    # A detector whose export says how its output reads (a YOLO head: [N, 4 + nc, A]) is servable.
    head = getattr(built.exported, "output_format", None)
    if built.task == "detection" and head is not None:
        from deploykit.export.sidecar import DetectionDoc

        side["detection"] = DetectionDoc(head=head).model_dump()
    return side


def _export_model(built: BuiltModel, dest: Path, opset: int, dynamic_batch: bool) -> tuple[int, list[str]]:
    """Write the ONNX model to ``dest`` and check it; returns the opset written and the output names."""
    model = built.exported.eval()
    example = built.example_input()
    try:
        return write_onnx(model, example, dest, opset, dynamic_batch)
    except torch.onnx.errors.OnnxExporterError as e:
        raise DeployKitError(_exporter_message(e, built, model, example, opset)) from None


def write_onnx(model: nn.Module, example: torch.Tensor, dest: str | Path, opset: int = DEFAULT_OPSET,
               dynamic_batch: bool = True, check: bool = True, params: bool = True) -> tuple[int, list[str]]:
    """The exporter itself: ``model`` on ``example`` to ``dest`` (TorchScript exporter, constant folding),
    checked by onnx.checker unless ``check`` is False. Without ``params`` the weights are graph inputs
    instead of initializers (the graph alone, for timing: see ``deploykit.bench.latency_table.layers.model_graph``).

    Returns:
        The opset written and the output names (``output``, or ``output_0``, ``output_1``, ...).

    Raises:
        torch.onnx.errors.OnnxExporterError: what the exporter refused (:func:`export_onnx` words it).
    """
    import onnx

    model = model.eval()
    with torch.no_grad():
        n_out = len(_flat(model(example)))
    outputs = [OUTPUT_NAME] if n_out == 1 else [f"{OUTPUT_NAME}_{i}" for i in range(n_out)]
    axes = {name: {0: "batch"} for name in [INPUT_NAME, *outputs]} if dynamic_batch else None
    with warnings.catch_warnings(), _no_exporter_log():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), str(dest), dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=outputs, dynamic_axes=axes, do_constant_folding=True,
            export_params=params,
        )
    if not check:
        return opset, outputs
    proto = onnx.load(str(dest))
    onnx.checker.check_model(proto)
    written = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return written, outputs


def onnx_bytes(module: nn.Module, example: torch.Tensor, opset: int = DEFAULT_OPSET) -> bytes:
    """``module`` exported by :func:`write_onnx` at ``example``'s static shape, as bytes (for timing).

    Not checked: what is timed is what the exporter wrote (the checker's load of a VGG's 500 MB took
    a fifth of its latency table's calibration); ONNX Runtime refuses a graph it cannot run.
    """
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.onnx"
        write_onnx(module, example, path, opset, dynamic_batch=False, check=False)
        return path.read_bytes()


@contextlib.contextmanager
def _no_exporter_log() -> Iterator[None]:
    """Silence the TorchScript exporter's log while exporting.

    On a failure it dumps the whole TorchScript graph on stdout ("Torch IR graph at
    exception"); its switch cannot be turned off (torch sets it on in
    ``setup_onnx_logging``), so the logging function itself is replaced meanwhile.
    """
    log = getattr(torch._C, "_jit_onnx_log", None)
    if log is None:
        yield
        return
    torch._C._jit_onnx_log = lambda *args: None
    try:
        yield
    finally:
        torch._C._jit_onnx_log = log


def _exporter_message(e: Exception, built: BuiltModel, model: nn.Module, example: torch.Tensor, opset: int) -> str:
    """One line: what the exporter refused and, for an operator, the module that calls it."""
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    m = re.search(r"'(\w+::\w+)'", first)
    if isinstance(e, torch.onnx.errors.UnsupportedOperatorError) and m:
        op = m.group(1)
        where = _module_calling(model, example, op)
        at = f" in module {where}" if where else ""
        return (f"cannot export {built.spec} to ONNX: operator {op}{at} is not supported by the exporter at opset "
                f"{opset}; replace it with supported operations (or try another --opset)")
    return f"cannot export {built.spec} to ONNX (opset {opset}): {first}"


def _module_calling(model: nn.Module, example: torch.Tensor, op: str) -> str | None:
    """``'name' (Type)`` of the submodule whose forward calls the aten operator ``op``, from a scoped trace.

    The tracer records, for every node, the stack of modules it was called in when
    given a module → scope-name map (what the exporter itself sets up).
    """
    names = {mod: f"{type(mod).__name__}::{name}" for name, mod in model.named_modules()}
    trace = torch.jit._trace
    old = getattr(trace, "_trace_module_map", None)
    trace._trace_module_map = names
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            graph, *_ = torch.jit._get_trace_graph(model, (example,))
    except Exception:  # noqa: BLE001 - the module is a hint; the operator alone is still a useful message
        return None
    finally:
        trace._trace_module_map = old
    for node in graph.nodes():
        if node.kind() == op:
            scope = node.scopeName().split("/")[-1]
            kind, _, name = scope.partition("::")
            return f"'{name}' ({kind})" if name else f"the top-level model ({kind})" if kind else None
    return None


def max_diffs(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """Max absolute difference, and that divided by the reference's max magnitude.

    The relative figure is scale-normalized (not element-wise), so logits near
    zero do not make it explode.
    """
    abs_diff = float(np.max(np.abs(ref.astype(np.float64) - got.astype(np.float64))))
    return abs_diff, abs_diff / max(float(np.max(np.abs(ref))), 1e-12)


def _flat(out: object) -> list[torch.Tensor]:
    """A model's outputs as a flat list (a tensor, a tuple/list, or a dict's values)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    return [t for o in out for t in _flat(o)]


@torch.no_grad()
def check_parity(model: nn.Module, onnx_path: str | Path, inputs: list[torch.Tensor]) -> dict[str, float]:
    """Run PyTorch and ONNX Runtime on the same inputs; report the worst differences over every output."""
    sess = ort_session(onnx_path)
    model.eval()
    worst_abs = worst_rel = 0.0
    for x in inputs:
        refs = [t.numpy() for t in _flat(model(x))]
        gots = sess.run(None, {INPUT_NAME: x.numpy()})
        for ref, got in zip(refs, gots, strict=True):
            if ref.shape != got.shape:
                raise DeployKitError(f"ONNX output shape {got.shape} differs from PyTorch {ref.shape}")
            a, r = max_diffs(ref, got)
            worst_abs, worst_rel = max(worst_abs, a), max(worst_rel, r)
    return {"max_abs_diff": worst_abs, "max_rel_diff": worst_rel}
