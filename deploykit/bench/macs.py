"""Multiply-accumulates of an ONNX graph at batch 1, for latency-against-MACs reports.

Counts what deploykit's cost model counts (convolutions and matrix products), from
the shapes ONNX shape inference gives once the batch dimension is fixed to 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from deploykit.registry import Registry

Shapes = dict[str, list[int]]
MAC_RULES: Registry[Callable[[object, Shapes, dict], float]] = Registry("op")


def _attr(node, name: str, default):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


@MAC_RULES.register("Conv")
def _conv(node, shapes: Shapes, inits: dict) -> float:
    w = shapes.get(node.input[1])
    out = shapes.get(node.output[0])
    if not w or not out:
        return 0.0
    # weight: (cout, cin / groups, *kernel); every output element takes cin/groups × kernel MACs
    return float(math.prod(out)) * float(math.prod(w[1:]))


@MAC_RULES.register("Gemm")
def _gemm(node, shapes: Shapes, inits: dict) -> float:
    a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
    if not a or not out:
        return 0.0
    k = a[0] if _attr(node, "transA", 0) else a[-1]
    return float(math.prod(out)) * k


@MAC_RULES.register("MatMul")
def _matmul(node, shapes: Shapes, inits: dict) -> float:
    a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
    if not a or not out:
        return 0.0
    return float(math.prod(out)) * a[-1]


def _batch1_graph(path: str | Path):
    """The ONNX model with shapes inferred at batch 1, and every tensor's shape; None when inference fails."""
    import onnx
    from onnx import shape_inference

    try:
        model = onnx.load(str(path))
        for inp in model.graph.input:
            dims = inp.type.tensor_type.shape.dim
            if dims and not dims[0].dim_value:
                dims[0].dim_value = 1
        model = shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - a report without these figures is better than no report
        return None
    shapes: Shapes = {}
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        if dims and dims[0] == 0:  # a batch dimension inference lost on the way (dynamic pads): batch 1
            dims[0] = 1
        if dims and all(d > 0 for d in dims):
            shapes[vi.name] = dims
    return model, shapes


def onnx_macs(path: str | Path) -> int | None:
    """MACs of one batch-1 inference of the ONNX file; None when shapes cannot be inferred."""
    got = _batch1_graph(path)
    if got is None:
        return None
    model, shapes = got
    inits = {i.name: i for i in model.graph.initializer}
    for name, t in inits.items():
        shapes[name] = list(t.dims)
    total = 0.0
    for node in model.graph.node:
        if node.domain in ("", "ai.onnx") and node.op_type in MAC_RULES:
            total += MAC_RULES.get(node.op_type)(node, shapes, inits)
    return int(total)


def onnx_largest_activation(path: str | Path) -> int:
    """Bytes of the largest intermediate tensor of one batch-1 inference (0 when shapes cannot be inferred).

    A runtime holds at least this much per image while running the model: a lower
    bound on its activation memory, used to refuse batches that cannot fit.
    """
    from onnx import helper

    got = _batch1_graph(path)
    if got is None:
        return 0
    model, shapes = got
    largest = 0
    for vi in model.graph.value_info:
        if vi.name in shapes:
            try:
                size = np.dtype(helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)).itemsize
            except (KeyError, TypeError, ValueError):
                size = 4
            largest = max(largest, math.prod(shapes[vi.name]) * size)
    return largest
