"""Aiming a latency target by measurement: the table predicts, the timing decides.

The table's error on a whole network is mostly a factor (ops it does not model shrink
slower than the layers it does), so a miss aims the selection's latency target at
``predicted × target / measured``. :class:`LatencyAim` owns the checks and the rounds;
it returns the re-aimed :class:`SelectConfig` and leaves applying it to the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from deploykit.select.global_rank import SelectConfig
from deploykit.select.targets import LATENCY_COST

# Check records: {"iteration", "why" ("progress" | "met"), "target", "predicted", "measured", "aim"}.
Checks = list[dict[str, Any]]


@dataclass
class LatencyAim:
    """When to time a pruned model, and where to aim the latency target next.

    Attributes:
        measure: the measured latency ratio of a model to the base, the same on every process.
        rounds: how many times to prune further when the measurement misses the target.
        step: while pruning gradually, time again each time the prediction has fallen by this much.
    """

    measure: Callable[[nn.Module], float]
    rounds: int = 3
    step: float = 0.1

    @staticmethod
    def applies(select: SelectConfig) -> bool:
        """Whether ``select`` has a latency target to aim."""
        return any(t.kind == LATENCY_COST for t in select.targets)

    def when_met(self, select: SelectConfig, predicted: float | None, model: nn.Module, checks: Checks,
                 iteration: int) -> SelectConfig | None:
        """Time ``model`` once the predicted costs meet the targets; the re-aimed selection when more must go.

        None means the target is met, or the rounds are spent, or there is nothing to check.
        Every timing is appended to ``checks``; a model that still misses after the last round
        is kept and the report says by how much.
        """
        if not self.applies(select) or (checks and checks[-1]["aim"] is None):
            return None  # nothing to check, or concluded (the last timing aimed at nothing further)
        rounds = sum(1 for c in checks if c["why"] == "met")
        return self._time_and_aim(select, predicted, model, checks, iteration, "met", final=rounds >= self.rounds)

    def on_the_way(self, select: SelectConfig, predicted: float | None, model: nn.Module, checks: Checks,
                   iteration: int) -> SelectConfig | None:
        """While pruning gradually: time ``model`` each time its predicted latency has fallen by another
        :attr:`step` of the base, and aim where the measurement puts the target, so that the miss left
        when the prediction is met (removed in one go) is small. The re-aimed selection, or None."""
        if not self.applies(select):
            return None
        last = min((c["predicted"] for c in checks if c["predicted"] is not None), default=1.0)
        if predicted is None or predicted > last - self.step:
            return None
        return self._time_and_aim(select, predicted, model, checks, iteration, "progress", final=False)

    def _time_and_aim(self, select: SelectConfig, predicted: float | None, model: nn.Module, checks: Checks,
                      iteration: int, why: str, final: bool) -> SelectConfig | None:
        target = next(t for t in select.targets if t.kind == LATENCY_COST)
        goal = float(checks[0]["target"]) if checks else target.ratio  # the user's, not an aim
        measured = float(self.measure(model))
        check: dict[str, Any] = {"iteration": iteration, "why": why, "target": goal,
                                 "predicted": None if predicted is None else round(predicted, 4),
                                 "measured": round(measured, 4), "aim": None}
        checks.append(check)
        if predicted is None or final or (why == "met" and measured <= goal):
            return None
        aim = min(goal, predicted * goal / measured)  # never above the user's target
        check["aim"] = round(aim, 4)
        return replace(select, targets=[replace(t, ratio=aim) if t.kind == LATENCY_COST else t for t in select.targets])
