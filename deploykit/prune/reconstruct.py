"""``--recover reconstruct``: least-squares compensation of the consumer layers after removal.

He et al. (2017) follow channel selection with a least-squares reconstruction of the next
layer: find the consumer's new weights W' minimizing ‖Y − X' W'ᵀ‖², where Y is the layer's
output in the *original* network and X' its input in the *pruned* one, so the kept
channels take over what the removed ones contributed and earlier layers' errors are
compensated as well. Any criterion can use it; it can replace fine-tuning entirely.

How: every dense convolution (``groups == 1``) and linear layer whose input lost channels
is refit, in execution order (each fit sees the already refitted layers before it).
Targets come from the unpruned reference model restricted to the layer's surviving output
channels (:mod:`deploykit.prune.survivors` maps them); inputs are sampled the way He et
al. do (10 random output positions per image) at the same positions in both models.
The normal equations are summed over calibration batches and over processes, so every
process gets the same weights. Choices: a ridge of 1e-6 × the mean diagonal of X'ᵀX' for
stability; biases, where the layer has one, are refit with the weights.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from deploykit.errors import DeployKitError
from deploykit.graph.groups import ModelGraph
from deploykit.importance.features import sample_rows, weighted_consumer
from deploykit.importance.masks import Batch, device_of
from deploykit.prune.survivors import surviving
from deploykit.registry import Registry


class _Stop(Exception):
    """Raised by a capture hook once it has what it needs (the rest of the forward pass is wasted work)."""


def _execution_order(model: nn.Module, x: torch.Tensor, layers: Sequence[nn.Module]) -> list[nn.Module]:
    seen: list[nn.Module] = []
    wanted = set(layers)

    def hook(mod: nn.Module, args: tuple) -> None:
        if mod in wanted and mod not in seen:
            seen.append(mod)

    handles = [m.register_forward_pre_hook(hook) for m in layers]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def _capture_rows(model: nn.Module, layer: nn.Module, batches: Sequence[Batch], positions: int, seed: int,
                  stop: bool = True) -> list[torch.Tensor]:
    """The layer's sampled input rows per batch (the same positions for the same seed and shapes)."""
    gen = torch.Generator().manual_seed(seed)
    rows: list[torch.Tensor] = []

    def hook(mod: nn.Module, args: tuple) -> None:
        rows.append(sample_rows(mod, args[0].detach(), positions, gen))
        if stop:
            raise _Stop

    h = layer.register_forward_pre_hook(hook)
    dev = device_of(model)
    try:
        with torch.no_grad():
            for x, _ in batches:
                try:
                    model(x.to(dev))
                except _Stop:
                    pass
    finally:
        h.remove()
    return rows


def _flat(rows: torch.Tensor, bias: bool) -> torch.Tensor:
    x = rows.reshape(rows.shape[0], -1).double()
    return torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)], 1) if bias else x


@torch.no_grad()
def reconstruct(
    graph: ModelGraph,
    reference: nn.Module,
    batches: Sequence[Batch],
    positions: int = 10,
    ridge: float = 1e-6,
    all_reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
    seed: int = 0,
) -> list[str]:
    """Refit, in place, every consumer layer of ``graph.model`` whose input lost channels; returns their names.

    Args:
        graph: the pruned model's groups (their ``kept`` say what the reference still has).
        reference: the unpruned model, as ``graph`` was traced (same layer names).
        batches: calibration batches.
    """
    model = graph.model
    was, was_ref = model.training, reference.training
    model.eval()
    reference.eval()
    removal = {g.id: [k for k in range(full) if k not in set(g.kept)]
               for g, full in zip(graph.groups, graph.full_widths) if len(g.kept) < full}
    surv = surviving(reference, graph.example_input, removal, graph.ignore)
    ref_layers = dict(reference.named_modules())
    todo = []
    for name, mod in model.named_modules():
        ref = ref_layers.get(name)
        if not weighted_consumer(mod) or ref is None or name not in surv:
            continue
        if len(surv[name].inp) < ref.weight.shape[1]:  # its input lost channels
            todo.append(mod)
    names = {m: n for n, m in model.named_modules()}
    order = _execution_order(model, graph.example_input.to(device_of(model)), todo)
    done = []
    try:
        for i, mod in enumerate(order):
            name = names[mod]
            ref, s = ref_layers[name], surv[name]
            layer_seed = seed + i
            xs = _capture_rows(model, mod, batches, positions, layer_seed)
            rs = _capture_rows(reference, ref, batches, positions, layer_seed)
            w_ref = ref.weight.detach().reshape(ref.weight.shape[0], ref.weight.shape[1], -1).double()[s.out]
            b_ref = ref.bias.detach().double()[s.out] if ref.bias is not None else None
            has_bias = mod.bias is not None
            d = xs[0].shape[1] * xs[0].shape[2] + int(has_bias)
            xtx = torch.zeros(d, d, dtype=torch.float64)
            xty = torch.zeros(d, len(s.out), dtype=torch.float64)
            for x_rows, r_rows in zip(xs, rs):
                y = torch.einsum("rik,oik->ro", r_rows.double(), w_ref.to(r_rows.device))
                if b_ref is not None:
                    y = y + b_ref.to(y.device)
                x = _flat(x_rows, has_bias)
                xtx += (x.T @ x).cpu()
                xty += (x.T @ y).cpu()
            xtx, xty = all_reduce(xtx), all_reduce(xty)
            lam = ridge * float(xtx.diagonal().mean().clamp_min(1e-30))
            sol = torch.linalg.solve(xtx + lam * torch.eye(d, dtype=torch.float64), xty)  # [d, out]
            w_new = sol.T
            if has_bias:
                mod.bias.copy_(w_new[:, -1].to(mod.bias.dtype))
                w_new = w_new[:, :-1]
            mod.weight.copy_(w_new.reshape(mod.weight.shape).to(mod.weight.dtype))
            done.append(name)
    finally:
        model.train(was)
        reference.train(was_ref)
    return done


# A recovery step: (the pruned graph, a builder of the unpruned reference, fresh calibration batches
# or None without data, the sum over processes) -> None; it changes the graph's model in place.
Recovery = Callable[[ModelGraph, Callable[[], nn.Module], "Callable[[], Iterable[Batch]] | None",
                     Callable[[torch.Tensor], torch.Tensor]], None]
RECOVERIES: Registry[Recovery] = Registry("recovery")


@RECOVERIES.register("none")
def _no_recovery(graph: ModelGraph, reference: Callable[[], nn.Module],
                 calibration: Callable[[], Iterable[Batch]] | None,
                 all_reduce: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Nothing between removal and BatchNorm recalibration."""


@RECOVERIES.register("reconstruct")
def reconstruct_pruned(graph: ModelGraph, reference: Callable[[], nn.Module],
                       calibration: Callable[[], Iterable[Batch]] | None,
                       all_reduce: Callable[[torch.Tensor], torch.Tensor], batches: int = 4) -> None:
    """Reconstruct ``graph.model``'s consumer layers against the unpruned model on calibration batches."""
    if calibration is None:
        raise DeployKitError("--recover reconstruct needs calibration data: pass --data SPEC")
    calib = list(itertools.islice(calibration(), batches))
    ref = reference().to(device_of(graph.model))
    reconstruct(graph, ref, calib, all_reduce=all_reduce)
