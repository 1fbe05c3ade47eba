"""The pruned model timed against the base on the backend a latency table was measured on.

A table predicts; only a measurement says whether ``--target-latency`` was met. A
:class:`LatencyCheck` is made from the unpruned model (its timing callable is a
snapshot: ONNX Runtime's is built from exported bytes, the others from a copy), and
:meth:`LatencyCheck.ratio` times any later state of the model against it in the same
interleaved rounds, so load on a shared machine hits both alike; load that adds a fixed
cost to every inference does not cancel in a ratio, so each side's fastest block of rounds
is compared (:func:`~deploykit.bench.latency.fastest_block`). It exists only where this machine can run the table's backend on the table's
device: a table measured on a Jetson predicts, and nothing here can check it.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from deploykit.bench.latency import budgeted, fastest_block, warm_round
from deploykit.bench.latency_table.file import LutKey
from deploykit.bench.latency_table.timers import TIMERS, Timer, TimingConfig, get_timer
from deploykit.progress import Task

# A slow spell on the machine this was measured on lasted up to about 45 s: a check waits a minute at most.
PAUSE_S, WAIT_S = 5.0, 60.0


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
        reference_s: the base's time on a quiet machine: the table's measurement of the base at
            first, then the fastest base block any check has read (None: none yet).
        spell: a check whose base runs more than this fraction slower than ``reference_s`` read
            the machine in a slow spell: it is read again after ``pause_s``, for up to ``wait_s``
            (None: :data:`PAUSE_S`, :data:`WAIT_S`); past that the quietest reading is kept and
            becomes the reference (the machine is slower now, not in a spell).
        rereads: how many times the last check was read again.
    """

    timer: Timer
    base_fn: Any
    example: torch.Tensor
    runs: int = 1000
    warmup: int = 2
    budget_s: float = 8.0
    min_runs: int = 10
    block: int = 100
    reference_s: float | None = None
    spell: float = 0.1
    pause_s: float | None = None
    wait_s: float | None = None
    rereads: int = 0

    @classmethod
    def for_table(cls, key: LutKey, model: nn.Module, example: torch.Tensor, runs: int = 1000,
                  base_ms: float | None = None) -> LatencyCheck | None:
        """A check on the table's backend, or None when this machine cannot run it as the table did
        (``base_ms``: the table's measurement of the base, the first quiet reference)."""
        if key.backend not in TIMERS:
            return None
        timer = get_timer(key.backend, TimingConfig(batch=key.batch, threads=key.threads, precision=key.precision))
        if timer.device() != key.device:
            return None
        return cls(timer, timer.model_fn(_snapshot(model), example.cpu()), example.cpu(), runs,
                   reference_s=base_ms / 1e3 if base_ms else None)

    def ratio(self, model: nn.Module, task: Task | None = None) -> float:
        """``model``'s latency over the base's, both timed in the same rounds (each side's fastest
        block median; ``task`` advances once a round of the first reading). A reading taken in a
        slow spell (see :attr:`spell`) is taken again."""
        fns = {"base": self.base_fn, "now": self.timer.model_fn(_snapshot(model), self.example)}
        runs = budgeted(self.budget_s, warm_round(fns), self.min_runs, self.runs)  # the first warm-up round, timed
        pause = PAUSE_S if self.pause_s is None else self.pause_s
        deadline = time.monotonic() + (WAIT_S if self.wait_s is None else self.wait_s)
        self.rereads, best = 0, None
        while True:
            times = self.timer.time_models(fns, runs, max(0, self.warmup - 1), task if self.rereads == 0 else None)
            base, now = fastest_block(times["base"], self.block), fastest_block(times["now"], self.block)
            if best is None or base < best[0]:
                best = (base, now)
            if self.reference_s is None or base <= self.reference_s * (1 + self.spell):
                self.reference_s = base if self.reference_s is None else min(self.reference_s, base)
                break
            if time.monotonic() + pause >= deadline:
                self.reference_s = best[0]  # no quiet stretch in the whole wait: this is the machine's speed now
                break
            self.rereads += 1
            time.sleep(pause)
        if task is not None and runs < self.runs:
            task.advance(self.runs - runs)  # the bar was sized for the most rounds
        return best[1] / best[0]


def _snapshot(model: nn.Module) -> nn.Module:
    """An eval-mode CPU copy without hooks: the model may be training on a GPU, is pruned in place
    later, and may carry a criterion's hooks, which have no business in a timed run."""
    snap = copy.deepcopy(model).cpu().eval()
    for m in snap.modules():
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
        m._backward_hooks.clear()
    return snap
