"""Aiming a latency target by timing: the block estimator and the candidate search, on constructed
timings (no wall clock)."""

from __future__ import annotations

import pytest
from torch import nn

from deploykit.bench.latency import fastest_block
from deploykit.bench.latency_check import LatencyCheck
from deploykit.select import SelectConfig, Target
from deploykit.select.latency_aim import LatencyAim


class _Timer:
    """A timer whose rounds come from a script: ``spell`` adds ``extra`` seconds to both models."""

    def __init__(self, base: float, now: float, spell: range, extra: float) -> None:
        self.base, self.now, self.spell, self.extra = base, now, spell, extra

    def model_fn(self, module, example):
        return lambda: None

    def time_models(self, fns, runs, warmup, task=None):
        add = [self.extra if i in self.spell else 0.0 for i in range(runs)]
        return {"base": [self.base + a for a in add], "now": [self.now + a for a in add]}


def test_fastest_block_reads_the_quiet_stretch_and_the_median_of_one_block():
    quiet, loud = [1.0] * 100, [1.6] * 100
    assert fastest_block(loud + quiet + loud, 100) == 1.0
    assert fastest_block([3.0, 1.0, 2.0], 100) == 2.0  # fewer rounds than two blocks: the median of all


def test_a_check_is_not_moved_by_a_spell_that_adds_a_fixed_cost_to_every_inference():
    # Base 2.2 ms, pruned 1.0 ms; a spell adds 0.65 ms to both for 70% of the rounds: the plain median
    # would read (1.65 / 2.85) = 0.58 where the machine's own ratio is 0.45.
    timer = _Timer(2.2e-3, 1.0e-3, spell=range(700), extra=0.65e-3)
    check = LatencyCheck(timer, lambda: None, example=None, runs=1000, budget_s=1e9)  # type: ignore[arg-type]
    assert check.ratio(nn.Identity()) == pytest.approx(1.0 / 2.2)


def _select(ratio: float = 0.5) -> SelectConfig:
    return SelectConfig(targets=[Target("latency_ms", ratio)])


def _aim_on(truth, rounds: int = 3):
    """A LatencyAim whose candidates measure ``truth(aim)``: returns (chosen aim, checks)."""
    timed = []

    def candidate(select):
        aim = select.targets[0].ratio
        timed.append(aim)
        return aim, nn.Linear(1, 1)

    def measure(_model):
        return truth(timed[-1])

    checks: list = []
    chosen = LatencyAim(measure, rounds=rounds, pruned_copy=lambda w: nn.Linear(1, 1)).before_removal(
        _select(), candidate, checks, iteration=0)
    return chosen.targets[0].ratio, checks


def test_a_pessimistic_table_is_aimed_above_the_target_until_the_measurement_is_close():
    chosen, checks = _aim_on(lambda a: 0.8 * a)  # the model runs at 0.8 of what the table predicts
    assert checks[0]["aim"] == 0.5 and checks[0]["measured"] == pytest.approx(0.4)
    assert chosen > 0.5 and 0.475 <= 0.8 * chosen <= 0.5
    assert all(c["why"] == "preview" for c in checks)


def test_an_optimistic_table_is_aimed_below_and_the_best_candidate_that_met_is_kept():
    chosen, checks = _aim_on(lambda a: 1.3 * a)
    assert checks[0]["measured"] > 0.5 and checks[1]["aim"] < 0.5
    assert 1.3 * chosen <= 0.5


def test_a_measurement_not_linear_in_the_prediction_is_bracketed():
    truth = lambda a: 0.1 + 0.5 * a ** 3  # convex: the proportional step overshoots
    chosen, checks = _aim_on(truth, rounds=5)
    assert any(c["measured"] > 0.5 for c in checks)  # a candidate above the target: bracketed
    met = [c for c in checks if c["measured"] <= 0.5]
    assert truth(chosen) == pytest.approx(max(c["measured"] for c in met), abs=1e-4)
    assert 0.5 * 0.95 <= truth(chosen) <= 0.5


def test_no_candidate_meets_the_target_and_the_last_estimate_is_aimed():
    chosen, checks = _aim_on(lambda a: 0.6 + 0.1 * a, rounds=1)  # never at or below 0.5
    assert len(checks) == 2 and all(c["measured"] > 0.5 for c in checks)
    assert chosen < checks[-1]["aim"]  # lower than anything timed: the checks after removal go on from there


def test_no_rounds_means_no_candidates_timed():
    checks: list = []
    sel = LatencyAim(lambda m: 0.1, rounds=0, pruned_copy=lambda w: nn.Linear(1, 1)).before_removal(
        _select(), lambda s: (0.5, nn.Linear(1, 1)), checks, iteration=0)
    assert checks == [] and sel.targets[0].ratio == 0.5


class _Clock:
    """``time.monotonic`` and ``time.sleep`` that only move when slept."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


class _SpellTimer(_Timer):
    """Every reading until ``quiet_after`` is in a spell that adds ``extra`` to both models."""

    def __init__(self, base: float, now: float, extra: float, quiet_after: int) -> None:
        super().__init__(base, now, range(0), 0.0)
        self.extra, self.quiet_after, self.readings = extra, quiet_after, 0

    def time_models(self, fns, runs, warmup, task=None):
        add = self.extra if self.readings < self.quiet_after else 0.0
        self.readings += 1
        return {"base": [self.base + add] * runs, "now": [self.now + add] * runs}


@pytest.fixture
def clock(monkeypatch):
    c = _Clock()
    monkeypatch.setattr("deploykit.bench.latency_check.time", c)
    return c


def test_a_reading_whose_base_runs_slow_is_read_again_until_the_spell_ends(clock):
    timer = _SpellTimer(2.2e-3, 1.0e-3, extra=0.65e-3, quiet_after=3)
    check = LatencyCheck(timer, lambda: None, None, runs=1000, budget_s=1e9, reference_s=2.3e-3,  # type: ignore[arg-type]
                         pause_s=5.0, wait_s=60.0)
    assert check.ratio(nn.Identity()) == pytest.approx(1.0 / 2.2)  # not (1.65 / 2.85)
    assert check.rereads == 3 and clock.now == 15.0
    assert check.reference_s == pytest.approx(2.2e-3)  # the quietest base seen is the next check's reference


def test_a_machine_slower_for_the_whole_wait_is_taken_as_it_is_and_not_waited_for_again(clock):
    timer = _SpellTimer(2.2e-3, 1.0e-3, extra=0.65e-3, quiet_after=10**6)
    check = LatencyCheck(timer, lambda: None, None, runs=1000, budget_s=1e9, reference_s=2.2e-3,  # type: ignore[arg-type]
                         pause_s=5.0, wait_s=60.0)
    assert check.ratio(nn.Identity()) == pytest.approx(1.65 / 2.85)
    assert clock.now < 60.0 and check.reference_s == pytest.approx(2.85e-3)
    waited = clock.now
    check.ratio(nn.Identity())
    assert check.rereads == 0 and clock.now == waited  # the new speed is the reference now


def test_the_first_reading_becomes_the_reference_when_there_is_none(clock):
    timer = _SpellTimer(2.2e-3, 1.0e-3, extra=0.0, quiet_after=0)
    check = LatencyCheck(timer, lambda: None, None, runs=1000, budget_s=1e9, wait_s=60.0)  # type: ignore[arg-type]
    check.ratio(nn.Identity())
    assert check.rereads == 0 and check.reference_s == pytest.approx(2.2e-3) and clock.now == 0.0
