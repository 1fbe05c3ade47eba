"""The weighted layers a latency table measures, as standalone operations.

A :class:`LayerOp` is one call of a convolution or linear layer with everything but
its channel counts fixed (kernel, stride, padding, input size, grouping): the key of
a latency measurement. :func:`record_calls` finds every call of every weighted layer
of a model in one forward pass (a layer called on several inputs, like a detection
head shared by FPN levels, gives several calls). Builders turn an op and a
``(cin, cout)`` pair into something a backend can time: a one-node ONNX graph, or a
torch module.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from deploykit.registry import Registry


@dataclass(frozen=True)
class LayerOp:
    """A convolution or linear call, channel counts aside.

    Attributes:
        kind: ``conv`` or ``linear``.
        kernel, stride, dilation: per spatial dim (convolutions; empty for linear).
        padding: ONNX ``pads`` (begins then ends).
        in_per_group: input channels per group; 0 for an ordinary (ungrouped) layer. A
            grouped layer keeps it fixed as it shrinks (deploykit prunes whole groups),
            so its group count is ``cin // in_per_group``; depthwise is 1.
        spatial: the input's spatial size (conv), or the dims between batch and features (linear).
        bias: whether it adds a bias.
    """

    kind: str
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    in_per_group: int
    spatial: tuple[int, ...]
    bias: bool

    def key(self) -> str:
        """A stable string form (measurement caches are keyed by it)."""
        f = lambda t: "x".join(map(str, t)) or "-"  # noqa: E731
        return (f"{self.kind}:k{f(self.kernel)}:s{f(self.stride)}:p{f(self.padding)}:d{f(self.dilation)}"
                f":g{self.in_per_group}:i{f(self.spatial)}:b{int(self.bias)}")

    def groups(self, cin: int) -> int:
        """Group count at ``cin`` input channels."""
        return max(1, cin // self.in_per_group) if self.in_per_group else 1

    def to_dict(self) -> dict:
        """JSON form (lists, so that it equals itself read back)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> LayerOp:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def weight_count(self, cin: int, cout: int) -> int:
        """Weights of the layer at ``cin`` → ``cout`` channels (bias aside)."""
        return cout * (cin // self.groups(cin)) * math.prod(self.kernel)

    def macs(self, cin: int, cout: int) -> float:
        """Multiply-accumulates of one sample (for reports and sanity checks)."""
        if self.kind == "linear":
            return float(math.prod(self.spatial)) * cin * cout
        out = [(s + self.padding[i] + self.padding[i + len(self.kernel)] - self.dilation[i] * (k - 1) - 1) // self.stride[i] + 1
               for i, (s, k) in enumerate(zip(self.spatial, self.kernel))]
        return float(math.prod(out)) * cout * (cin / self.groups(cin)) * math.prod(self.kernel)


def op_of(module: nn.Module, input_shape: tuple[int, ...]) -> LayerOp | None:
    """The :class:`LayerOp` of ``module`` called on an input of ``input_shape``; None for other layers."""
    if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
        nd = len(module.kernel_size)
        k, d = module.kernel_size, module.dilation
        if module.padding == "same":  # the odd extra pixel goes at the end, as torch does
            total = [d[i] * (k[i] - 1) for i in range(nd)]
            pads = tuple(t // 2 for t in total) + tuple(t - t // 2 for t in total)
        elif module.padding == "valid":
            pads = (0,) * (2 * nd)
        else:
            pads = tuple(module.padding) * 2
        groups = module.groups
        ipg = 0 if groups == 1 else module.in_channels // groups
        return LayerOp("conv", tuple(module.kernel_size), tuple(module.stride), pads, tuple(module.dilation), ipg,
                       tuple(input_shape[-nd:]), module.bias is not None)
    if isinstance(module, nn.Linear):
        return LayerOp("linear", (), (), (), (), 0, tuple(input_shape[1:-1]), module.bias is not None)
    return None


@dataclass(frozen=True)
class LayerCall:
    """One call of a weighted layer: its module path, which call it was, and its op."""

    name: str
    call: int
    op: LayerOp
    cin: int
    cout: int

    @property
    def key(self) -> str:
        """``name`` for a layer called once, ``name#i`` for its i-th call otherwise."""
        return self.name if self.call == 0 else f"{self.name}#{self.call}"


@torch.no_grad()
def record_calls(model: nn.Module, example_input: torch.Tensor) -> list[LayerCall]:
    """Every call of every convolution and linear layer in one forward pass, in call order."""
    calls: list[LayerCall] = []
    counts: dict[str, int] = {}
    hooks = []

    def hook(name: str):
        def fn(mod: nn.Module, args, _out) -> None:
            if not args or not isinstance(args[0], torch.Tensor):
                return
            op = op_of(mod, tuple(args[0].shape))
            if op is None:
                return
            cin = mod.in_channels if op.kind == "conv" else mod.in_features
            cout = mod.out_channels if op.kind == "conv" else mod.out_features
            i = counts.get(name, 0)
            counts[name] = i + 1
            calls.append(LayerCall(name, i, op, cin, cout))
        return fn

    for name, mod in model.named_modules():
        if isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear)):
            hooks.append(mod.register_forward_hook(hook(name)))
    was = model.training
    model.eval()
    try:
        model(example_input[:1])
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return calls


# -- builders: an op at (cin, cout) as something a backend runs ---------------------------------------------------

def input_shape(op: LayerOp, batch: int, cin: int) -> tuple[int, ...]:
    """The input of ``op`` at ``cin`` channels."""
    return (batch, cin, *op.spatial) if op.kind == "conv" else (batch, *op.spatial, cin)


def torch_module(op: LayerOp, cin: int, cout: int) -> nn.Module:
    """A torch layer computing ``op`` (random weights)."""
    if op.kind == "linear":
        return nn.Linear(cin, cout, bias=op.bias)
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[len(op.kernel)]
    nd = len(op.kernel)
    if op.padding[:nd] != op.padding[nd:]:
        raise ValueError(f"asymmetric padding {op.padding} has no torch layer")
    return conv(cin, cout, op.kernel, op.stride, op.padding[:nd], op.dilation, groups=op.groups(cin), bias=op.bias)


ONNX_BUILDERS: Registry = Registry("layer kind")

_POOL = np.zeros(0, np.float32)


def weights(*shape: int) -> np.ndarray:
    """Weights of ``shape``: a view of one random buffer that every layer graph shares.

    Drawing and copying a VGG classifier's 100M weights for each measured point took seconds
    (20 times its kernel's time); the values do not change a dense kernel's speed.
    """
    global _POOL
    n = math.prod(shape)
    if _POOL.size < n:
        _POOL = (np.random.default_rng(0).random(n, dtype=np.float32) - np.float32(0.5)) * np.float32(0.1)
    return _POOL[:n].reshape(shape)


@ONNX_BUILDERS.register("conv")
def _onnx_conv(op: LayerOp, cin: int, cout: int) -> tuple[list, dict[str, np.ndarray]]:
    from onnx import helper

    g = op.groups(cin)
    w = {"W": weights(cout, cin // g, *op.kernel)} | ({"B": weights(cout)} if op.bias else {})
    node = helper.make_node("Conv", ["x", *w], ["y"], kernel_shape=list(op.kernel), strides=list(op.stride),
                            pads=list(op.padding), dilations=list(op.dilation), group=g)
    return [node], w


@ONNX_BUILDERS.register("linear")
def _onnx_linear(op: LayerOp, cin: int, cout: int) -> tuple[list, dict[str, np.ndarray]]:
    from onnx import helper

    w = {"W": weights(cin, cout)} | ({"B": weights(cout)} if op.bias else {})
    if not op.spatial:  # what the exporter writes for a classifier head
        return [helper.make_node("Gemm", ["x", *w], ["y"])], w
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m" if op.bias else "y"])]
    if op.bias:
        nodes.append(helper.make_node("Add", ["m", "B"], ["y"]))
    return nodes, w


@dataclass(frozen=True)
class LayerGraph:
    """A one-layer ONNX graph, its weights declared external and given alongside.

    Attributes:
        model: the serialized graph (opset 17) without its weights' data.
        weights: each external initializer's data by name (ONNX Runtime takes them through
            ``SessionOptions.add_external_initializers``, without a copy into the protobuf).
    """

    model: bytes
    weights: dict[str, np.ndarray]


def onnx_layer(op: LayerOp, cin: int, cout: int, batch: int) -> LayerGraph:
    """``op`` alone at ``cin`` → ``cout`` channels as an ONNX graph."""
    from onnx import TensorProto, helper

    nodes, data = ONNX_BUILDERS.get(op.kind)(op, cin, cout)
    inits = []
    for name, a in data.items():
        t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=a.shape, data_location=TensorProto.EXTERNAL)
        t.external_data.add(key="location", value=name)
        inits.append(t)
    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape(op, batch, cin))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return LayerGraph(model.SerializeToString(), data)


def model_graph(module: nn.Module, example: torch.Tensor) -> LayerGraph | None:
    """``module`` at ``example``'s static shape as an ONNX graph whose weights are given alongside,
    for timing a whole model (calibration variants, compress's latency checks).

    The exporter writes the graph without its weights (they become graph inputs); each is then
    declared an external initializer: the module's own tensor where the input is one of its
    parameters or buffers, a view of the shared random buffer (:func:`weights`) where the exporter
    computed it (a BatchNorm folded into its convolution): a dense kernel's speed does not depend
    on the values. Serializing a VGG-11's 500 MB of weights into the protobuf, writing and parsing
    it took more than the graph's export and the session together.

    Returns:
        The graph, or None where the exporter refuses the weightless export or an input cannot be
        supplied so (computed, but not float or of a dynamic shape): time the complete export then.
    """
    import tempfile
    from pathlib import Path

    import onnx
    from onnx import TensorProto, helper

    from deploykit.export.onnx import INPUT_NAME, write_onnx

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.onnx"
        try:
            write_onnx(module, example, path, dynamic_batch=False, check=False, params=False)
        except Exception:  # noqa: BLE001 - the complete export then says what the exporter refuses
            return None
        proto = onnx.load(str(path))
    own = dict((*module.named_parameters(), *module.named_buffers()))
    data: dict[str, np.ndarray] = {}
    for inp in proto.graph.input:
        if inp.name == INPUT_NAME:
            continue
        tt = inp.type.tensor_type
        if inp.name in own:
            data[inp.name] = own[inp.name].detach().cpu().contiguous().numpy()
        elif tt.elem_type == TensorProto.FLOAT and all(d.HasField("dim_value") for d in tt.shape.dim):
            data[inp.name] = weights(*(d.dim_value for d in tt.shape.dim))
        else:
            return None
    kept = [i for i in proto.graph.input if i.name not in data]
    del proto.graph.input[:]
    proto.graph.input.extend(kept)
    for name, a in data.items():
        t = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(a.dtype), dims=a.shape,
                        data_location=TensorProto.EXTERNAL)
        t.external_data.add(key="location", value=name)
        proto.graph.initializer.append(t)
    return LayerGraph(proto.SerializeToString(), data)
