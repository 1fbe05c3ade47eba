"""Monotone fits and cliff detection on synthetic latency curves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deploykit.bench.latency_table.fit import find_steps, isotonic, ladder, monotone2d
from deploykit.bench.latency_table.profile import fit_calibration


def test_isotonic_pools_adjacent_violators():
    assert isotonic([1, 3, 2, 4]).tolist() == [1, 2.5, 2.5, 4]
    assert isotonic([5, 4, 3]).tolist() == [4, 4, 4]
    y = np.array([1.0, 2.0, 2.0, 7.0])
    assert np.array_equal(isotonic(y), y)  # already monotone: unchanged


def test_monotone2d_is_non_decreasing_along_both_axes_and_keeps_monotone_tables():
    rng = np.random.default_rng(0)
    z = np.add.outer(np.arange(5.0), np.arange(6.0)) + rng.normal(0, 1.5, (5, 6))
    fit = monotone2d(z)
    assert (np.diff(fit, axis=0) >= -1e-12).all() and (np.diff(fit, axis=1) >= -1e-12).all()
    clean = np.outer(np.arange(1.0, 5.0), np.arange(1.0, 4.0))
    assert np.allclose(monotone2d(clean), clean)


def staircase(widths, period=16):
    return [1.0 + math.ceil(w / period) for w in widths]


def test_staircase_cliffs_are_the_low_side_of_each_step_and_the_ladder_extends_them():
    widths = list(range(64, 129))
    steps = find_steps(widths, staircase(widths))
    assert steps.cliffs == [64, 80, 96, 112, 128]  # cheaper than every wider width
    assert steps.period == 16 and steps.offset == 0
    assert steps.fit == sorted(steps.fit)  # the envelope is monotone
    # Below the scan the lattice continues; every ladder width sits right below a jump.
    assert ladder(steps, lo=13, hi=128) == [16, 32, 48, 64, 80, 96, 112, 128]


def test_noise_below_the_tolerance_makes_no_cliff():
    rng = np.random.default_rng(1)
    widths = list(range(64, 129))
    noisy = [v * (1 + rng.uniform(-0.004, 0.004)) for v in staircase(widths)]
    steps = find_steps(widths, noisy)
    assert steps.period == 16 and set(steps.cliffs) >= {80, 96, 112, 128}


def test_slow_widths_are_flagged_and_never_chosen():
    # Blocks of 8, and widths that are not multiples of 4 fall off the fast path (3x slower).
    widths = list(range(32, 65))
    ms = [(1 + math.ceil(w / 8)) * (3 if w % 4 else 1) for w in widths]
    steps = find_steps(widths, ms)
    assert all(w % 4 for w in steps.slow) and 33 in steps.slow
    assert steps.period == 8 and steps.offset == 0
    lad = ladder(steps, lo=8, hi=64)
    assert lad == [8, 16, 24, 32, 40, 48, 56, 64]


def test_smooth_latency_allows_every_width_and_no_scan_falls_back():
    widths = list(range(8, 17))
    steps = find_steps(widths, [float(w) for w in widths])
    assert steps.cliffs == widths and steps.period == 1
    assert ladder(steps, lo=8, hi=16) == widths
    empty = find_steps([], [])
    assert ladder(empty, lo=3, hi=30, fallback=8) == [8, 16, 24, 30]


@pytest.mark.parametrize("unit", [4])
def test_atoms_keep_ladder_widths_whole_atoms(unit):
    widths = list(range(32, 65, unit))
    steps = find_steps(widths, staircase(widths, 16), unit=unit)
    lad = ladder(steps, lo=8, hi=64, unit=unit)
    assert all((64 - w) % unit == 0 for w in lad) and lad[-1] == 64 and 48 in lad


@pytest.mark.parametrize("true", [{"layers": 0.9, "fixed": 1.0}, {"layers": 0.5, "fixed": 0.2, "weight": 0.3}],
                         ids=["table-and-constant", "weight-traffic"])
def test_calibration_recovers_the_terms_that_generated_the_latency(true):
    rng = np.random.default_rng(0)
    pts = []
    for _ in range(10):
        lay, act, wt = rng.uniform(2, 20), rng.uniform(5, 50), rng.uniform(1, 40)
        y = true["layers"] * lay + true.get("fixed", 0) + true.get("weight", 0) * wt
        pts.append((y * (1 + rng.normal(0, 0.002)), lay, act, wt))
    cal = fit_calibration(pts)
    assert cal.scale == pytest.approx(true["layers"], rel=0.05)
    assert cal.fixed_ms == pytest.approx(true["fixed"], abs=0.1)
    assert cal.ms_per_weight_mb == pytest.approx(true.get("weight", 0.0), abs=0.01)
    assert cal.ms_per_mb == pytest.approx(0.0, abs=0.005)  # activations played no part
