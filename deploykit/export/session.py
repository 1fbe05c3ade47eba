"""The one way deploykit opens an ONNX Runtime session.

After Polygraphy's ``SessionFromOnnx`` feeding ``OnnxrtRunner(sess)``: the parity check,
the ONNX Runtime runner, the latency timers and the memory probe all get their sessions
here, so thread counts, providers and the graph optimization level mean the same thing
everywhere. It lives in the export layer, the lowest that runs ONNX Runtime (the parity
check); the runtime layer above it builds on it.

Importing this module imports neither onnxruntime nor torch: the memory probe loads it in
a fresh process that must pay only for what it measures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploykit.errors import DeployKitError

CPU = "CPUExecutionProvider"

# ONNX Runtime's GraphOptimizationLevel members by the names the options use.
OPTIMIZATION_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                       "all": "ORT_ENABLE_ALL"}


def ort_session(model: str | Path | bytes, threads: int | None = None, providers: list[str] | None = None,
                optimization: str = "all", profile_prefix: str | None = None, quiet: bool = False,
                initializers: dict[str, Any] | None = None) -> Any:
    """An ONNX Runtime ``InferenceSession`` with deploykit's options.

    Args:
        model: an ONNX file, or a serialized model.
        threads: intra-op threads, with one inter-op thread (None: ONNX Runtime's default).
        providers: execution providers (default: the CPU provider alone).
        optimization: graph optimization level: ``disable``, ``basic``, ``extended`` or ``all``
            (ONNX Runtime's default).
        profile_prefix: turn on ONNX Runtime's profiler, writing to files with this prefix.
        quiet: log errors only (the timers and the memory probe open many sessions).
        initializers: numpy arrays for the model's initializers declared as external data, by
            name (a graph built in memory need not copy large weights into its protobuf).

    Raises:
        DeployKitError: no such file, an unknown optimization level, or a model ONNX Runtime cannot load.
    """
    import onnxruntime as ort

    if not isinstance(model, bytes) and not Path(model).is_file():
        raise DeployKitError(f"ONNX file {model} does not exist")
    if optimization not in OPTIMIZATION_LEVELS:
        raise DeployKitError(f"unknown graph optimization level {optimization!r}; "
                             f"valid: {', '.join(OPTIMIZATION_LEVELS)}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[optimization])
    if quiet:
        opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    if initializers:
        opts.add_external_initializers(list(initializers), [ort.OrtValue.ortvalue_from_numpy(a) for a in initializers.values()])
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, opts, providers=providers or [CPU])
    except Exception as e:  # noqa: BLE001 - a model ORT cannot load is bad input
        what = "the serialized model" if isinstance(model, bytes) else model
        raise DeployKitError(f"ONNX Runtime cannot load {what}: {str(e).splitlines()[0][:200]}") from None
