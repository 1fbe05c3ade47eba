"""Group Fisher importance (Liu et al., ICML 2021, "Group Fisher Pruning for Practical Network Compression").

Every channel c carries a virtual mask m_c = 1 multiplied into the input of each
layer that consumes it. For sample n, g_nc = ∂L_n/∂m_c = Σ_hw A_nchw · ∂L_n/∂A_nchw.
The g of all consumers of a coupled group, and of every call of a layer used
several times, are summed per sample *before* squaring; Δ_c = ½ Σ_n g_nc².
Setting m_c = 0 at every site is exactly the removal of channel c, so Δ_c is the
second-order (Fisher) estimate of the loss increase from removing it.

Two ways to feed it: :meth:`GroupFisher.accumulate` runs its own forward/backward
on a calibration batch (eval mode, summed loss: the one-shot schedule), and
:meth:`GroupFisher.observe` reads the masks' gradients from the training step's
own backward pass (the progressive schedule: no extra pass, as in the paper's
reference hook that accumulates during fine-tuning). Accumulators are local to a
process; :meth:`score` sums them over processes.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator

import torch
from torch import nn

from deploykit.graph.groups import Group, ModelGraph
from deploykit.importance.base import CRITERIA, Batch, Importance, ScoringContext

_Site = tuple[str, torch.Tensor, torch.Tensor]  # group id, positions in the layer input, group channel


def mask_sites(graph: ModelGraph) -> dict[nn.Module, list[_Site]]:
    """For each layer a group's channels enter, which of its input positions carry which group channel.

    The graph's input sites: consumers (convs, linears, channel re-mappings such as the
    option-A shortcut) and depthwise/grouped convs that carry the channels through.
    """
    return {mod: [(gid, torch.tensor(idxs), torch.tensor(root)) for gid, idxs, root in entries]
            for mod, entries in graph.input_sites().items()}


def _mask_shape(mod: nn.Module, x: torch.Tensor) -> tuple[int, ...]:
    if isinstance(mod, nn.Linear):  # features on the last dim
        return (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
    return (x.shape[0], x.shape[1]) + (1,) * (x.ndim - 2)


class MaskCapture:
    """While entered, multiplies a per-sample ones-mask that requires grad into every consuming layer's input.

    After a backward pass through those forward calls, :meth:`group_grads` turns the
    masks' gradients into per-sample group gradients g_nc.
    """

    def __init__(self, graph: ModelGraph, sites: dict[nn.Module, list[_Site]]) -> None:
        self.graph, self.sites = graph, sites
        self.masks: dict[nn.Module, list[torch.Tensor]] = defaultdict(list)
        self._handles: list = []

    def _pre_hook(self, mod: nn.Module, args: tuple) -> tuple | None:
        inp = args[0]
        if not torch.is_grad_enabled():  # evaluation inside the block: nothing to observe
            return None
        m = torch.ones(_mask_shape(mod, inp), dtype=inp.dtype, device=inp.device, requires_grad=True)
        self.masks[mod].append(m)
        return (inp * m, *args[1:])

    def __enter__(self) -> MaskCapture:
        self._handles = [mod.register_forward_pre_hook(self._pre_hook) for mod in self.sites]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def group_grads(self, scale: float = 1.0) -> dict[str, torch.Tensor]:
        """``{group id: Tensor[N, channels]}`` (float64), each mask gradient times ``scale``."""
        channels = {g.id: g.channels for g in self.graph.prunable()}
        out: dict[str, torch.Tensor] = {}
        for mod, mod_sites in self.sites.items():
            for m in self.masks.get(mod, []):
                if m.grad is None:
                    continue
                grad = m.grad.reshape(m.shape[0], -1).double() * scale  # one call of the layer: [N, input channels]
                for gid, idxs, root in mod_sites:
                    acc = out.get(gid)
                    if acc is None:
                        acc = out[gid] = torch.zeros(grad.shape[0], channels[gid], dtype=torch.float64, device=grad.device)
                    acc.index_add_(1, root.to(grad.device), grad[:, idxs.to(grad.device)])
        self.masks.clear()
        return out


def per_sample_group_grads(ctx: ScoringContext, batch: Batch, sites: dict[nn.Module, list[_Site]]) -> dict[str, torch.Tensor]:
    """g_nc for every prunable group, in eval mode with the summed loss: ``{group id: Tensor[N, channels]}``."""
    x, y = batch
    model = ctx.model
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:  # only the masks need gradients
            p.requires_grad_(False)
        with MaskCapture(ctx.graph, sites) as cap:
            loss = ctx.loss_fn(model(x), y)
        loss.backward()
    finally:
        for p, f in flags:
            p.requires_grad_(f)
        model.train(was_training)
    out = cap.group_grads()
    for g in ctx.graph.prunable():  # groups no sample reached still get a (zero) row per sample
        out.setdefault(g.id, torch.zeros(x.shape[0], g.channels, dtype=torch.float64))
    return out


class GroupFisher(Importance):
    """Δ_c = ½ Σ_n (Σ_sites g_nc)², accumulated over batches until :meth:`reset`."""

    requires_data = True
    default_normalize = "memory"
    comparable = True

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._acc: dict[str, torch.Tensor] = {}
        self._sites: dict[nn.Module, list[_Site]] | None = None
        self._sites_key: tuple | None = None

    def _sites_for(self, graph: ModelGraph) -> dict[nn.Module, list[_Site]]:
        key = tuple(g.channels for g in graph.groups)
        if self._sites is None or key != self._sites_key:  # index maps change when channels go
            self._sites, self._sites_key = mask_sites(graph), key
        return self._sites

    def add(self, grads: dict[str, torch.Tensor]) -> None:
        """Accumulate ½ Σ_n g_nc² of per-sample group gradients."""
        for gid, g in grads.items():
            delta = 0.5 * g.pow(2).sum(0)
            acc = self._acc.get(gid)
            if acc is not None and acc.numel() == delta.numel():
                self._acc[gid] = acc.to(delta.device) + delta
            else:  # first batch, or the group changed width since (its old values no longer apply)
                self._acc[gid] = delta

    def accumulate(self, ctx: ScoringContext, batch: Batch) -> None:
        self.add(per_sample_group_grads(ctx, batch, self._sites_for(ctx.graph)))

    @contextlib.contextmanager
    def observe(self, ctx: ScoringContext, scale: float) -> Iterator[None]:
        """Accumulate from the forward and backward passes run inside the block.

        Args:
            scale: turns the gradient of the block's loss into that of one sample's loss;
                for a loss averaged over a batch of n samples, ``n``.
        """
        with MaskCapture(ctx.graph, self._sites_for(ctx.graph)) as cap:
            yield
        self.add(cap.group_grads(scale))

    def score(self, group: Group, ctx: ScoringContext) -> torch.Tensor:
        acc = self._acc.get(group.id)
        if acc is None or acc.numel() != group.channels:
            device = next(iter(self._acc.values())).device if self._acc else torch.device("cpu")
            acc = torch.zeros(group.channels, dtype=torch.float64, device=device)
        return ctx.all_reduce(acc.detach().clone()).cpu()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The accumulators by group id (this process's share)."""
        return {gid: acc.detach().cpu().clone() for gid, acc in self._acc.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Replace the accumulators."""
        self._acc = {gid: v.to(torch.float64).clone() for gid, v in state.items()}


CRITERIA.register("fisher", GroupFisher)
