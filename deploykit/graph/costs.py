"""What a model and each of its channels cost: params, MACs, activation bytes.

:func:`measure` counts a real forward pass (MACs from PyTorch's FlopCounterMode,
activation bytes from every op's output). :class:`CostModel` predicts the same
totals for any vector of group widths without touching the model, from the
shapes recorded when the graph was traced; selection uses it to ask "what does
one more channel of this group cost now?" after every removal, as neighbours
shrink.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from deploykit.graph.groups import ModelGraph

BYTES = 4  # fp32 activations


@dataclass
class Costs:
    """Whole-model costs at batch 1."""

    params: int
    macs: int
    activation_bytes: int
    # Predicted end-to-end latency, only where a latency table is attached (a forward pass cannot measure it).
    latency_ms: float | None = None

    def to_dict(self) -> dict[str, int | float]:
        """JSON form (``latency_ms`` only when known)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def ratio(self, base: Costs) -> dict[str, float]:
        """Each cost as a fraction of ``base`` (``latency_ms`` when both know it)."""
        out = {k: getattr(self, k) / max(getattr(base, k), 1) for k in ("params", "macs", "activation_bytes")}
        if self.latency_ms is not None and base.latency_ms:
            out["latency_ms"] = self.latency_ms / base.latency_ms
        return out


class LatencyHook(Protocol):
    """Predicts latency from group widths (``deploykit.bench.latency_table.predictor.LatencyModel``)."""

    def predict(self, w: list[int] | None = None) -> float: ...

    def saving(self, gi: int, k: int, w: list[int]) -> float: ...


class _ActivationCounter(TorchDispatchMode):
    """Sums the bytes every op writes: fresh outputs and in-place results, not views."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        schema = func._schema
        for ret, val in zip(schema.returns, out if isinstance(out, (tuple, list)) else (out,)):
            alias = ret.alias_info
            if isinstance(val, torch.Tensor) and (alias is None or alias.is_write):
                self.bytes += val.numel() * val.element_size()
        return out


@torch.no_grad()
def measure(model: nn.Module, example_input: torch.Tensor) -> Costs:
    """Count params, MACs and activation bytes of one batch-1 forward pass.

    MACs cover convolutions and matrix products (FlopCounterMode's FLOPs / 2);
    activation bytes are every tensor an op writes, the input excluded.
    """
    x = example_input[:1]
    was = model.training
    model.eval()
    flops = FlopCounterMode(display=False)
    acts = _ActivationCounter()
    with flops, acts:
        model(x)
    model.train(was)
    params = sum(p.numel() for p in model.parameters())
    return Costs(params=params, macs=flops.get_total_flops() // 2, activation_bytes=acts.bytes)


def _out_shape(node) -> tuple[int, ...] | None:
    gf = getattr(node, "grad_fn", None)
    meta = getattr(gf, "_input_metadata", None) if gf is not None else None
    if not meta:
        return None
    return tuple(meta[0].shape)


def channel_dim(node, memo: dict | None = None) -> int:
    """The dim of a graph node's output that holds channels.

    Convolutions and norms over dim 1 say NCHW; Linear and LayerNorm say the last
    dim; a permute moves it; any other op inherits it from its first input.
    """
    memo = {} if memo is None else memo
    if id(node) in memo:
        return memo[id(node)]
    shape = _out_shape(node)
    nd = len(shape) if shape is not None else 4
    mod = getattr(node, "module", None)
    gf = getattr(node, "grad_fn", None)
    memo[id(node)] = 1  # provisional, breaks cycles
    if isinstance(mod, (nn.Linear, nn.LayerNorm)):
        d = nd - 1
    elif isinstance(mod, (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.GroupNorm)):
        d = 1
    elif gf is not None and hasattr(gf, "_saved_dims") and node.inputs:
        src = channel_dim(node.inputs[0], memo)
        dims = [x % nd for x in gf._saved_dims]
        d = dims.index(src) if src in dims else 1
    elif node.inputs:
        d = min(channel_dim(node.inputs[0], memo), nd - 1)
    else:
        d = 1
    memo[id(node)] = d if nd > 1 else 0
    return memo[id(node)]


@functools.lru_cache(maxsize=None)
def _is_view_op(grad_fn_name: str) -> bool:
    """Whether the ATen op behind an autograd node returns a view (``PermuteBackward0`` -> ``aten.permute``).

    :func:`measure` counts only what an op writes, so the prediction must skip views too.
    """
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", re.sub(r"Backward\d*$", "", grad_fn_name)).lower()
    op = getattr(torch.ops.aten, snake, None)
    if op is None:
        return False
    overloads = op.overloads()
    if not overloads:
        return False
    returns = getattr(op, "default", None) or getattr(op, overloads[0])
    ret = returns._schema.returns
    return bool(ret) and ret[0].alias_info is not None and not ret[0].alias_info.is_write


def _writes_activation(node) -> bool:
    """A node whose output is a fresh tensor: not a parameter, not a view of another tensor."""
    gf = getattr(node, "grad_fn", None)
    if gf is None or isinstance(getattr(node, "module", None), nn.Parameter):
        return False
    name = type(gf).__name__
    return name != "AccumulateGrad" and not _is_view_op(name)


def _per_channel_numel(shape: tuple[int, ...], dim: int) -> int:
    """Elements per channel per sample when channels are on ``dim``."""
    if len(shape) < 2:
        return 1
    return int(math.prod(shape[1:]) // max(shape[dim], 1))


@dataclass
class _Layer:
    name: str
    kind: str  # conv | linear | norm
    base_in: int
    base_out: int
    groups: int
    depthwise: bool
    kernel: int  # product of kernel dims
    out_positions: int  # output spatial positions per sample (tokens for linear)
    bias: bool
    in_terms: list[tuple[int, float]]
    out_terms: list[tuple[int, float]]


class _LayerArrays:
    """The layers' cost formulas (:meth:`CostModel._layer_macs`, :meth:`CostModel._layer_params`) as arrays,
    evaluated for all layers at once from the channels each group has lost."""

    def __init__(self, layers: list[_Layer], n_groups: int) -> None:
        self.terms_in = np.zeros((len(layers), n_groups))
        self.terms_out = np.zeros((len(layers), n_groups))
        for i, lay in enumerate(layers):
            for g, share in lay.in_terms:
                self.terms_in[i, g] += share
            for g, share in lay.out_terms:
                self.terms_out[i, g] += share

        def col(field: str) -> np.ndarray:
            return np.asarray([getattr(lay, field) for lay in layers], dtype=np.float64)

        self.base_in, self.base_out, self.groups = col("base_in"), col("base_out"), col("groups")
        self.kernel, self.positions, self.dw, self.bias = col("kernel"), col("out_positions"), col("depthwise"), col("bias")
        self.norm = np.asarray([lay.kind == "norm" for lay in layers], dtype=np.float64)

    def totals(self, gone: np.ndarray) -> tuple[float, float]:
        """Summed MACs and params of the layers when each group has lost ``gone`` channels."""
        cin = self.base_in - self.terms_in @ gone
        cout = self.base_out - self.terms_out @ gone
        per_out = np.where(self.dw > 0, self.kernel, cin / self.groups * self.kernel)
        macs = np.where(self.norm > 0, 0.0, cout * per_out * self.positions)
        params = np.where(self.norm > 0, cout * self.kernel, cout * per_out + cout * self.bias)
        return float(macs.sum()), float(params.sum())


class _Saving(Mapping):
    """:meth:`CostModel.saving`'s answer: each cost computed when it is read (a normalization reads one;
    the MACs and params of every layer a group touches are the expensive ones)."""

    def __init__(self, cm: CostModel, gi: int, k: int, w: list[int]) -> None:
        self._args, self._cm, self._got = (gi, k, w), cm, {}

    def _keys(self) -> list[str]:
        return ["macs", "params", "memory"] + (["latency"] if self._cm.latency is not None else [])

    def __getitem__(self, key: str) -> float:
        if key not in self._got:
            if key not in self._keys():
                raise KeyError(key)
            self._got[key] = self._cm._saving_of(key, *self._args)
        return self._got[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())


class CostModel:
    """Predicts params, MACs and activation bytes as functions of group widths.

    Every weighted layer's input and output widths are its original widths minus
    the channels removed from each group it belongs to (scaled when one group
    channel maps to several features, as through a flatten). Costs not owned by
    any group are carried as a constant taken from the measured base.
    """

    def __init__(self, graph: ModelGraph, base: Costs | None = None) -> None:
        self.graph = graph
        self.groups = graph.groups
        self.index = {g.id: i for i, g in enumerate(self.groups)}
        # Widths when the model was traced; predictions are relative to them.
        self.full = [g.channels for g in self.groups]
        self.layers: dict[str, _Layer] = {}
        self.act_per_channel = [0.0] * len(self.groups)
        self.neighbours: list[set[int]] = [set() for _ in self.groups]
        self._chdim: dict = {}
        for gi, g in enumerate(self.groups):
            self._add_group(gi, g)
        self.group_layers: list[list[_Layer]] = [[] for _ in self.groups]
        for lay in self.layers.values():
            gs = {gi for gi, _ in lay.in_terms + lay.out_terms}
            for gi in gs:
                self.neighbours[gi] |= gs
                self.group_layers[gi].append(lay)
        self.base = base or measure(graph.model, graph.example_input)
        self.latency: LatencyHook | None = None
        full = self.widths_full()
        self._fixed_macs = self.base.macs - sum(self._layer_macs(lay, full) for lay in self.layers.values())
        self._fixed_params = self.base.params - sum(self._layer_params(lay, full) for lay in self.layers.values())
        self._vec = _LayerArrays(list(self.layers.values()), len(self.groups))
        self._full = np.asarray(self.full, dtype=np.float64)
        self._act = np.asarray(self.act_per_channel, dtype=np.float64)

    def _add_group(self, gi: int, g) -> None:
        channels = self.full[gi]
        seen_tensors = set()
        for it in g.items:
            share = len(it.idxs) / max(channels, 1)
            shape = _out_shape(it.node)
            if it.out and shape is not None and id(it.node) not in seen_tensors and _writes_activation(it.node):
                seen_tensors.add(id(it.node))
                self.act_per_channel[gi] += share * _per_channel_numel(shape, channel_dim(it.node, self._chdim)) * BYTES
            param = getattr(it.node, "module", None)
            if isinstance(param, nn.Parameter):  # an unwrapped parameter (ConvNeXt's layer scale)
                width = len(it.idxs)
                lay = self.layers.get(it.name) or _Layer(it.name, "norm", width, width, 1, False,
                                                         param.numel() // max(width, 1), 0, False, [], [])
                self.layers[it.name] = lay
                lay.out_terms.append((gi, share))
                continue
            mod = it.module
            if mod is None or not any(True for _ in mod.parameters(recurse=False)):
                continue
            lay = self.layers.get(it.name) or self._new_layer(it.name, mod, shape)
            if lay is None:
                continue
            self.layers[it.name] = lay
            (lay.out_terms if it.out else lay.in_terms).append((gi, share))

    def _new_layer(self, name: str, mod: nn.Module, shape) -> _Layer | None:
        node = self.graph.dg.module2node.get(mod)
        shape = _out_shape(node) if node is not None else shape
        if isinstance(mod, nn.modules.conv._ConvNd):
            positions = int(math.prod(shape[2:])) if shape is not None else 1
            dw = mod.groups == mod.in_channels == mod.out_channels and mod.groups > 1
            return _Layer(name, "conv", mod.in_channels, mod.out_channels, mod.groups, dw,
                          int(math.prod(mod.kernel_size)), positions, mod.bias is not None, [], [])
        if isinstance(mod, nn.Linear):
            # Every position but the batch and the feature dim is a row of the matrix product.
            rows = int(math.prod(shape[1:-1])) if shape is not None and len(shape) > 2 else 1
            return _Layer(name, "linear", mod.in_features, mod.out_features, 1, False, 1, rows, mod.bias is not None, [], [])
        n = sum(p.numel() for p in mod.parameters(recurse=False))
        width = getattr(mod, "num_features", None) or getattr(mod, "num_channels", None)
        if width is None and isinstance(mod, nn.LayerNorm):
            width = mod.normalized_shape[-1]
        if not width:
            return None
        return _Layer(name, "norm", width, width, 1, False, n // width, 0, False, [], [])

    def attach_latency(self, hook: LatencyHook) -> None:
        """Predict latency too: ``predict`` fills ``latency_ms`` (the base's at the traced widths) and
        ``saving`` adds ``latency`` (milliseconds)."""
        self.latency = hook
        self.base = replace(self.base, latency_ms=hook.predict(self.widths_full()))

    def widths_full(self) -> list[int]:
        """Original channel count of every group."""
        return list(self.full)

    def widths(self) -> list[int]:
        """Current channel count of every group."""
        return [len(g.kept) for g in self.groups]

    def layer_dims(self, lay: _Layer, w: list[int]) -> tuple[float, float]:
        """A layer's (input, output) widths at group widths ``w``.

        Args:
            lay: one of :attr:`layers`.
            w: the channel count of every group, in the order of :attr:`groups`.

        Returns:
            Its original widths less the channels each of its groups loses, times the features
            one group channel stands for there (hence floats, e.g. through a flatten).
        """
        cin = lay.base_in - sum((self.full[g] - w[g]) * s for g, s in lay.in_terms)
        cout = lay.base_out - sum((self.full[g] - w[g]) * s for g, s in lay.out_terms)
        return cin, cout

    def _layer_macs(self, lay: _Layer, w: list[int]) -> float:
        cin, cout = self.layer_dims(lay, w)
        if lay.kind == "norm":
            return 0.0
        if lay.depthwise:
            return cout * lay.kernel * lay.out_positions
        return cout * (cin / lay.groups) * lay.kernel * lay.out_positions

    def _layer_params(self, lay: _Layer, w: list[int]) -> float:
        cin, cout = self.layer_dims(lay, w)
        if lay.kind == "norm":
            return cout * lay.kernel
        per_out = lay.kernel if lay.depthwise else (cin / lay.groups) * lay.kernel
        return cout * per_out + (cout if lay.bias else 0)

    def predict(self, w: list[int] | None = None) -> Costs:
        """Predicted whole-model costs for group widths ``w`` (current widths by default)."""
        w = self.widths() if w is None else w
        # Vectorized over layers: selection predicts after every chunk it removes (DenseNet-121: 240
        # layers, hundreds of chunks), and the per-layer Python loop took most of its time.
        gone = self._full - np.asarray(w, dtype=np.float64)
        macs, params = self._vec.totals(gone)
        act = self.base.activation_bytes - float(gone @ self._act)
        latency = self.latency.predict(w) if self.latency is not None else None
        return Costs(params=round(self._fixed_params + params), macs=round(self._fixed_macs + macs),
                     activation_bytes=round(act), latency_ms=latency)

    def saving(self, gi: int, k: int, w: list[int]) -> Mapping[str, float]:
        """What removing ``k`` more channels of group ``gi`` saves, at widths ``w``: ``macs``, ``params``,
        ``memory`` (activation bytes) and, with a latency table, ``latency`` (ms), each computed when read."""
        return _Saving(self, gi, k, list(w))

    def _saving_of(self, key: str, gi: int, k: int, w: list[int]) -> float:
        if key == "memory":
            return k * self.act_per_channel[gi]
        if key == "latency" and self.latency is not None:
            return self.latency.saving(gi, k, w)
        w2 = list(w)
        w2[gi] -= k
        of = {"macs": self._layer_macs, "params": self._layer_params}[key]
        return sum(of(lay, w) - of(lay, w2) for lay in self.group_layers[gi])
