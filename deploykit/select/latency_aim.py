"""Aiming a latency target by measurement: the table predicts, the timing decides.

The table's error on a whole network is mostly a factor (ops it does not model shrink
slower than the layers it does), so a miss aims the selection's latency target at
``predicted × target / measured``. The factor cuts both ways: where the table is
pessimistic, the model its aim gives runs well below the target and channels that
bought no needed time are gone. Before a one-shot removal, then, candidate selections
are timed as pruned copies (:meth:`LatencyAim.before_removal`) and the aim may rise
above the target; once channels are removed it only falls. :class:`LatencyAim` owns the
checks and the rounds; it returns the re-aimed :class:`SelectConfig` and leaves applying
it to the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from deploykit.select.global_rank import SelectConfig, Target
from deploykit.select.targets import LATENCY_COST

# Check records: {"iteration", "why" ("preview" | "progress" | "met"), "target", "predicted", "measured", "aim"};
# a "met" check of widths a preview timed also has "readings" (the preview's and its own; "measured" is the lower).
Checks = list[dict[str, Any]]
# A candidate selection's predicted latency ratio and a pruned copy of the model at its widths.
Candidate = Callable[[SelectConfig], tuple[float | None, nn.Module]]


@dataclass
class LatencyAim:
    """When to time a pruned model, and where to aim the latency target next.

    Attributes:
        measure: the measured latency ratio of a model to the base, the same on every process.
        rounds: how many times to prune further when the measurement misses the target; before a
            one-shot removal, ``rounds + 1`` candidates are timed at most.
        step: while pruning gradually, time again each time the prediction has fallen by this much.
        tolerance: a candidate measured within this fraction below the target is close enough.
        pruned_copy: a copy of the model pruned to given group widths (group id -> channels),
            for timing candidates before a removal; None: no candidates are timed.
    """

    measure: Callable[[nn.Module], float]
    rounds: int = 3
    step: float = 0.1
    tolerance: float = 0.05
    pruned_copy: Callable[[dict[str, int]], nn.Module] | None = None

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

    def before_removal(self, select: SelectConfig, candidate: Candidate, checks: Checks, iteration: int) -> SelectConfig:
        """Aim a one-shot removal by timing pruned copies before anything is removed.

        The first candidate is the table's own aim; the next ones follow :meth:`_next_aim`, until
        one measures within :attr:`tolerance` below the target or ``rounds + 1`` were timed.
        Returns the selection with the highest aim measured at or below the target, or, when
        none met it, the aim the last timing points to (the checks after removal go on from there).
        """
        if not self.applies(select) or self.rounds == 0:
            return select
        goal = self._latency_target(select).ratio
        met: dict[float, tuple[float, float]] = {}  # aim -> (predicted, measured), at or below the target
        missed: dict[float, tuple[float, float]] = {}
        aim = goal
        timed: dict[float, float] = {}  # predicted -> measured: aims on one latency step give one model
        for _ in range(self.rounds + 1):
            predicted, model = candidate(self._aimed(select, aim))
            if predicted is None:
                break
            measured = timed.get(round(predicted, 4))
            if measured is None:
                measured = timed[round(predicted, 4)] = float(self.measure(model))
                checks.append({"iteration": iteration, "why": "preview", "target": goal, "predicted": round(predicted, 4),
                               "measured": round(measured, 4), "aim": round(aim, 4)})
            (met if measured <= goal else missed)[aim] = (predicted, measured)
            if goal * (1 - self.tolerance) <= measured <= goal:
                break
            nxt = self._next_aim(goal, met, missed)
            if abs(nxt - aim) < 1e-3:
                break
            aim = nxt
        return self._aimed(select, max(met) if met else aim)

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
        goal = float(checks[0]["target"]) if checks else self._latency_target(select).ratio  # the user's, not an aim
        measured = float(self.measure(model))
        check: dict[str, Any] = {"iteration": iteration, "why": why, "target": goal,
                                 "predicted": None if predicted is None else round(predicted, 4),
                                 "measured": round(measured, 4), "aim": None}
        seen = [c["measured"] for c in checks if c["why"] == "preview" and predicted is not None
                and c["predicted"] == check["predicted"]]
        if why == "met" and seen:
            # The same widths were timed before removal: two readings of one model. Load adds to
            # the time, never takes from it, so the faster reading is the one that saw a quieter machine.
            check["readings"] = [seen[-1], check["measured"]]
            measured = min(seen[-1], measured)
            check["measured"] = round(measured, 4)
        checks.append(check)
        if predicted is None or final or (why == "met" and measured <= goal):
            return None
        # Once removed, channels stay removed: after removal the aim only falls. While pruning
        # gradually, a model measured faster than predicted may be aimed above the target.
        aim = predicted * goal / measured
        aim = min(self._latency_target(select).ratio, aim) if why == "met" else min(1.0, aim)
        check["aim"] = round(aim, 4)
        return self._aimed(select, aim)

    @staticmethod
    def _next_aim(goal: float, met: dict[float, tuple[float, float]], missed: dict[float, tuple[float, float]]) -> float:
        """Where to aim the next candidate: between the two candidates that bracket the target, the
        prediction at which the line through their measurements crosses it; with one side only,
        ``predicted × target / measured`` of the nearest. Kept strictly inside the bracket (halfway
        when the estimate falls outside: the measurement is not linear in the prediction)."""
        lo, hi = max(met, default=None), min(missed, default=None)
        if lo is not None and hi is not None:
            (p0, m0), (p1, m1) = met[lo], missed[hi]
            nxt = p0 + (goal - m0) * (p1 - p0) / (m1 - m0) if m1 > m0 else (lo + hi) / 2
        else:
            p, m = met[lo] if lo is not None else missed[hi]  # type: ignore[index]
            nxt = min(1.0, p * goal / m)
        low, high = 0.0 if lo is None else lo, 1.0 if hi is None else hi
        inside = low < nxt < high or (hi is None and low < nxt <= 1.0)  # 1.0: nothing goes for latency
        return nxt if inside else (low + high) / 2

    @staticmethod
    def _latency_target(select: SelectConfig) -> Target:
        return next(t for t in select.targets if t.kind == LATENCY_COST)

    @staticmethod
    def _aimed(select: SelectConfig, aim: float) -> SelectConfig:
        return replace(select, targets=[replace(t, ratio=aim) if t.kind == LATENCY_COST else t for t in select.targets])
