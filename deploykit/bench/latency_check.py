"""The pruned model timed against the base on the backend a latency table was measured on.

A table predicts; only a measurement says whether ``--target-latency`` was met. A
:class:`LatencyCheck` is made from the unpruned model (its timing callable is a
snapshot: ONNX Runtime's is built from exported bytes, the others from a copy), and
:meth:`LatencyCheck.ratio` times any later state of the model against it in the same
interleaved rounds, so load on a shared machine hits both alike; load that adds a fixed
cost to every inference does not cancel in a ratio, so each side's fastest block of rounds
is compared (:func:`_fastest`). It exists only where this machine can run the table's backend on the table's
device: a table measured on a Jetson predicts, and nothing here can check it.
"""

from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from deploykit.bench.latency import budgeted, warm_round
from deploykit.bench.latency_table.file import LutKey
from deploykit.bench.latency_table.timers import TIMERS, Timer, TimingConfig, get_timer
from deploykit.progress import Task


@dataclass
class LatencyCheck:
    """Times a model against the base snapshot taken when the check was made.

    Attributes:
        timer: the backend's timer, set like the table (batch, threads, precision).
        base_fn: runs the base model once.
        example: an input batch of the model's shape.
        runs: timed rounds per check, at most (interleaved; each side's fastest block median is compared).
        warmup: untimed rounds first.
        budget_s: seconds the timed rounds aim at: where a round takes longer (a VGG: half a
            second) there are fewer, at least ``min_runs``.
        min_runs: the fewest timed rounds.
        block: consecutive rounds per block (fewer rounds than two blocks: one block).
    """

    timer: Timer
    base_fn: Any
    example: torch.Tensor
    runs: int = 1000
    warmup: int = 2
    budget_s: float = 8.0
    min_runs: int = 10
    block: int = 100

    @classmethod
    def for_table(cls, key: LutKey, model: nn.Module, example: torch.Tensor, runs: int = 1000) -> LatencyCheck | None:
        """A check on the table's backend, or None when this machine cannot run it as the table did."""
        if key.backend not in TIMERS:
            return None
        timer = get_timer(key.backend, TimingConfig(batch=key.batch, threads=key.threads, precision=key.precision))
        if timer.device() != key.device:
            return None
        return cls(timer, timer.model_fn(_snapshot(model), example.cpu()), example.cpu(), runs)

    def ratio(self, model: nn.Module, task: Task | None = None) -> float:
        """Median latency of ``model`` over the base's, both timed in the same rounds (``task``
        advances once a round)."""
        fns = {"base": self.base_fn, "now": self.timer.model_fn(_snapshot(model), self.example)}
        runs = budgeted(self.budget_s, warm_round(fns), self.min_runs, self.runs)  # the first warm-up round, timed
        times = self.timer.time_models(fns, runs, max(0, self.warmup - 1), task)
        if task is not None and runs < self.runs:
            task.advance(self.runs - runs)  # the bar was sized for the most rounds
        return _fastest(times["now"], self.block) / _fastest(times["base"], self.block)


def _fastest(times: list[float], block: int) -> float:
    """The smallest median of consecutive blocks of ``block`` rounds (the median of all, when fewer
    than two blocks fit).

    On a shared or virtual machine the speed moves in spells of seconds to a minute: on the
    machine these numbers come from, a spell added about 0.65 ms to every ResNet-56 inference,
    pruned or not (base 2.2 -> 2.8 ms, a pruned copy 1.0 -> 1.7 ms), so the ratio read 0.59
    in a spell and 0.45 outside it. Both sides are timed in the same rounds, so their fastest
    blocks come from the same quiet stretch whenever the check saw one (the reasoning of
    ``timeit``'s advice to take the minimum of repeats).
    """
    n = len(times) // block
    if n < 2:
        return statistics.median(times)
    return min(statistics.median(times[i * block:(i + 1) * block]) for i in range(n))


def _snapshot(model: nn.Module) -> nn.Module:
    """An eval-mode CPU copy without hooks: the model may be training on a GPU, is pruned in place
    later, and may carry a criterion's hooks, which have no business in a timed run."""
    snap = copy.deepcopy(model).cpu().eval()
    for m in snap.modules():
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
        m._backward_hooks.clear()
    return snap
