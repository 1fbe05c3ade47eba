"""The ``dcff`` schedule: train a compact model whose kept filters are fusions of all the original ones.

1. Score with the KL criterion at the starting temperature; global ranking picks how many
   channels each group keeps (the cost targets) and which.
2. Remove them physically, but keep every producing layer's *original* filters (restricted
   to the input channels that remain) as a trainable bank. Before every training step the
   layer's weight is set to ``proxies[kept slots] @ bank``; after the backward pass the
   bank receives ``proxies[kept slots]ᵀ @ grad`` and the optimizer steps the banks, not the
   fused weights. So every original filter keeps learning while the model itself is
   already compact (its forward pass, costs and evaluation are those of the pruned model).
3. Fine-tune. ``updates`` times over the budget the proxies are recomputed from the bank at
   the current temperature. With ``reselect`` (DCFF's *dynamic* coding; off by default,
   see :class:`~deploykit.importance.dcff.DCFFImportance`) the kept filters are re-chosen
   too: a slot whose filter still ranks in the top keeps it, freed slots take the
   newcomers in order; in groups with parameter-free members (the option-A shortcut's
   channel map) slots never change filter, as the map would keep feeding the old channel.
4. At the end the proxies are set at t = t_end (one-hot): each kept slot holds its own
   trained filter, and the artifact is an ordinary pruned model.

No pretrained-importance pass and no sparsity regularizer: the compact model is trained
directly. Checkpoints are not written during this schedule (the bank is not part of the
pruned architecture); ``--resume`` is refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from deploykit.errors import DeployKitError
from deploykit.graph.pruners import ChannelScatter
from deploykit.importance.base import score_groups
from deploykit.importance.dcff import DCFFImportance, fuse, kl_scores, producers, proxies
from deploykit.prune.survivors import surviving
from deploykit.select import select_global
from deploykit.train.job import Job, apply_removal
from deploykit.train.loop import cosine_lr, make_optimizer
from deploykit.train.schedules import SCHEDULES


def _fusable(mod: nn.Module) -> bool:
    """Dense convolutions and linear layers: their filters are rows of one bank."""
    return isinstance(mod, nn.Linear) or (isinstance(mod, nn.Conv2d) and mod.groups == 1 and not mod.transposed)


@dataclass
class _Producer:
    """A fused layer: its weight (and bias) are ``rows @ bank``; the banks are what the optimizer trains."""

    layer: nn.Module
    bank: nn.Parameter
    bias_bank: nn.Parameter | None
    rows: torch.Tensor  # [kept slots, bank rows]

    def refresh(self) -> None:
        """Write the fused filters into the layer (no autograd: gradients are routed by :meth:`backprop`)."""
        with torch.no_grad():
            self.layer.weight.copy_(fuse(self.bank, self.rows).to(self.layer.weight.dtype))
            if self.bias_bank is not None:
                self.layer.bias.copy_(fuse(self.bias_bank, self.rows).to(self.layer.bias.dtype))

    def backprop(self) -> None:
        """d loss / d bank = rowsᵀ · d loss / d fused weight."""
        for fused, bank in ((self.layer.weight, self.bank), (self.layer.bias, self.bias_bank)):
            if bank is None or fused is None or fused.grad is None:
                continue
            g = (self.rows.T.to(fused.grad.dtype) @ fused.grad.reshape(fused.grad.shape[0], -1)).reshape(bank.shape)
            bank.grad = g if bank.grad is None else bank.grad + g
            fused.grad = None  # not the optimizer's: nobody else would clear it


@dataclass
class _FusedGroup:
    gid: str
    slots: list[int]  # the bank row each kept slot is centred on
    producers: list[_Producer]
    dynamic: bool


class Fusion:
    """The fused groups of a job, their proxies and their slots."""

    def __init__(self, groups: list[_FusedGroup]) -> None:
        self.groups = groups

    @property
    def layers(self) -> list[_Producer]:
        """Every fused layer."""
        return [p for fg in self.groups for p in fg.producers]

    @classmethod
    def install(cls, job: Job, removal: dict[str, list[int]], t: float) -> Fusion:
        """Remove ``removal`` physically, keeping the producers' original filters as fused banks."""
        graph = job.graph
        names = {m: n for n, m in job.model.named_modules()}
        plans = []
        for gid, drop in removal.items():
            g = graph.get(gid)
            dropped = set(drop)
            pos_of = {k: i for i, k in enumerate(g.kept)}
            slots = [pos_of[k] for k in g.kept if k not in dropped]  # as rows of the bank
            prods = [(m, i, r) for m, i, r in producers(g, job.scoring) if _fusable(m)]
            # Groups with a parameter-free channel map (option-A shortcut) keep their slots fixed.
            dynamic = not any(isinstance(it.module, ChannelScatter) and it.out for it in g.items)
            plans.append((g, slots, prods, dynamic))
        positions = {gid: [i for i, k in enumerate(graph.get(gid).kept) if k in set(drop)] for gid, drop in removal.items()}
        survivors = surviving(job.model, graph.example_input, positions, graph.ignore)
        banks = {}
        for _, _, prods, _ in plans:
            for mod, idxs, roots in prods:
                # Rows of the bank: the layer's outputs that carry this group's channels, in group order.
                order = [idx for _, idx in sorted(zip(roots, idxs))]
                inp = survivors[names[mod]].inp
                w = mod.weight.detach()[order][:, inp].clone()
                b = mod.bias.detach()[order].clone() if mod.bias is not None else None
                banks[mod] = (w, b)
        apply_removal(job, removal)
        fused = []
        for g, slots, prods, dynamic in plans:
            entries = []
            for mod, _, _ in prods:
                if mod.weight.shape[0] != len(slots):  # outputs beyond this group: leave the layer plain
                    continue
                w, b = banks[mod]
                rows = proxies(w, t)[slots].to(w.dtype)
                entries.append(_Producer(mod, nn.Parameter(w), nn.Parameter(b) if b is not None else None, rows))
            fused.append(_FusedGroup(g.id, slots, entries, dynamic))
        fusion = cls(fused)
        for p in fusion.layers:
            p.refresh()
        if job.trainer is not None:  # the optimizer trains the banks in place of the fused weights
            opt = make_optimizer(job.model, job.trainer.cfg)
            swap = {}
            for p in fusion.layers:
                swap[id(p.layer.weight)] = p.bank
                if p.bias_bank is not None:
                    swap[id(p.layer.bias)] = p.bias_bank
            for group in opt.param_groups:
                group["params"] = [swap.get(id(q), q) for q in group["params"]]
            job.trainer.optimizer = opt
            job.trainer.model_changed()
        return fusion

    def update(self, t: float, reselect: bool = False) -> None:
        """Recompute proxies at temperature ``t``; with ``reselect``, re-choose the kept filters where slots may move."""
        for fg in self.groups:
            ps = [proxies(p.bank, t) for p in fg.producers]
            if reselect and fg.dynamic and ps:
                total = sum(s / s.max().clamp_min(1e-30) for s in (kl_scores(p).cpu() for p in ps))
                top = set(torch.topk(total, len(fg.slots)).indices.tolist())
                staying = [k if k in top else None for k in fg.slots]
                incoming = iter(sorted(top - {k for k in staying if k is not None}))
                fg.slots = [k if k is not None else next(incoming) for k in staying]
            for prod, p in zip(fg.producers, ps):
                prod.rows = p[fg.slots].to(prod.bank.dtype)
                prod.refresh()

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """Around one training step's forward and backward: fused weights in, bank gradients out."""
        for p in self.layers:
            p.refresh()
        yield
        for p in self.layers:
            p.backprop()


@SCHEDULES.register("dcff")
class DCFFSchedule:
    """Fuse-while-training: see the module docstring."""

    trains_while_pruning = False

    def run(self, job: Job) -> None:
        crit = job.criterion
        if not isinstance(crit, DCFFImportance):
            raise DeployKitError("the dcff schedule needs the dcff criterion")
        if job.state.iteration or job.state.pruned_at is not None:
            raise DeployKitError("dcff cannot resume from a checkpoint (the fused banks are not checkpointed); "
                                 "rerun without --resume")
        job.checkpoints = False  # the banks are not part of the pruned architecture
        t0 = crit.temperature(0, job.pace.total)
        crit.t = t0
        scores = score_groups(crit, job.scoring)
        sel = select_global(job.cost_model, scores, job.select, comparable=crit.comparable)
        fusion = Fusion.install(job, sel.remove, t0)
        crit.fusion = fusion  # the training step enters crit.observe(), which routes through the fusion
        job.latency = None  # the fusion is built for this removal: no further removal after timing
        job.pruning_done()
        every = max(1, job.pace.total // crit.updates)
        while job.state.iteration < job.pace.total:
            it = job.state.iteration
            if it and it % every == 0:
                fusion.update(crit.temperature(it, job.pace.total), reselect=crit.reselect)
            loss = job.train_step(cosine_lr(it, job.pace.total, job.pace.lr), observe=True)
            job.step_done(loss)
        fusion.update(crit.t_end)  # one-hot proxies: the kept filters themselves, now plain weights
        crit.fusion = None
