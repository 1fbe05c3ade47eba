"""Torch-Pruning's own criteria, wrapped (not rewritten): taylor, fpgm, bn_scale, random.

Each calls the Torch-Pruning importance on ``ModelGraph.tp_group(group)``. Torch-Pruning's
per-group ``normalizer`` is turned off: deploykit's global ranking does that itself
for criteria whose raw scores do not compare across groups (``comparable = False``).

* ``taylor``: ``GroupTaylorImportance`` (Molchanov et al. 2019, |w · ∂L/∂w| summed over a
  channel's weights in every layer of the group). The gradient is that of the summed
  loss over all calibration batches, accumulated here and put into ``.grad`` only
  while Torch-Pruning reads it; it is summed over processes. Its scores estimate a loss
  change, so they compare across groups.
* ``fpgm``: ``FPGMImportance`` (He et al. 2019, distance to the other filters: filters near
  the geometric median are redundant).
* ``bn_scale``: ``BNScaleImportance`` (Liu et al. 2017, |γ| of the BatchNorm layers).
* ``random``: ``RandomImportance`` (uniform; seeded by ``--seed`` through torch's RNG).
"""

from __future__ import annotations

import torch
import torch_pruning as tp
from deploykit.graph.groups import Group
from deploykit.importance.base import CRITERIA, Batch, Importance, ScoringContext


class TPImportance(Importance):
    """A Torch-Pruning importance applied to deploykit groups.

    Args:
        imp: the Torch-Pruning importance object.
        comparable: whether its raw scores compare across groups.
    """

    def __init__(self, imp: tp.importance.Importance, comparable: bool = False) -> None:
        self._tp = imp
        self.comparable = comparable

    def score(self, group: Group, ctx: ScoringContext) -> torch.Tensor:
        s = self._tp(ctx.graph.tp_group(group))
        if s is None:  # a group without weighted layers: nothing to tell its channels apart
            return torch.zeros(group.channels)
        return s.detach().double().cpu()


class Taylor(TPImportance):
    """Group Taylor importance from gradients accumulated over the calibration batches."""

    requires_data = True
    comparable = True

    def __init__(self) -> None:
        super().__init__(tp.importance.GroupTaylorImportance(group_reduction="sum", normalizer=None), comparable=True)
        self.reset()

    def reset(self) -> None:
        self._grads: dict[str, torch.Tensor] = {}
        self._reduced = False

    def accumulate(self, ctx: ScoringContext, batch: Batch) -> None:
        model = ctx.model
        params = dict(model.named_parameters())
        was = model.training
        flags = [(p, p.requires_grad) for p in params.values()]
        try:
            model.eval()
            for p, _ in flags:
                p.requires_grad_(True)
            x, y = batch
            loss = ctx.loss_fn(model(x), y)
            names = list(params)
            grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
        finally:
            for p, f in flags:
                p.requires_grad_(f)
            model.train(was)
        for n, g in zip(names, grads):
            if g is None:
                continue
            acc = self._grads.get(n)
            self._grads[n] = g.detach().clone() if acc is None or acc.shape != g.shape else acc + g.detach()
        self._reduced = False

    def score(self, group: Group, ctx: ScoringContext) -> torch.Tensor:
        if not self._reduced:  # the gradient of the loss over every process's batches
            for g in self._grads.values():
                ctx.all_reduce(g)
            self._reduced = True
        params = dict(ctx.model.named_parameters())
        saved = {n: p.grad for n, p in params.items()}
        try:
            for n, p in params.items():
                g = self._grads.get(n)
                p.grad = g if g is not None and g.shape == p.shape else torch.zeros_like(p)
            return super().score(group, ctx)
        finally:
            for n, p in params.items():
                p.grad = saved[n]


class Random(TPImportance):
    """Uniform random scores (a baseline)."""

    comparable = True

    def __init__(self) -> None:
        super().__init__(tp.importance.RandomImportance(), comparable=True)


CRITERIA.register("taylor", Taylor)
CRITERIA.register("fpgm", lambda: TPImportance(tp.importance.FPGMImportance(normalizer=None)))
CRITERIA.register("bn_scale", lambda: TPImportance(tp.importance.BNScaleImportance(normalizer=None)))
CRITERIA.register("random", Random)
