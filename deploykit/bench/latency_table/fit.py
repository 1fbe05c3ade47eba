"""Monotone fits of measured latency and the cliffs in it.

Latency measured on a busy machine is noisy and, on real backends, not monotone in
the channel count: a width the kernel library cannot vectorize can be slower than a
wider one (ONNX Runtime's CPU convolutions leave their blocked fast path when the
input channels are not a multiple of 4, and pad output channels to blocks of 8).

* :func:`isotonic` / :func:`monotone2d`: least-squares non-decreasing fits (pool
  adjacent violators), the smooth tables a predictor interpolates;
* :func:`find_steps`: on a fine 1-D scan, the *cliffs*: the widths cheaper than every
  wider width (the low side of each step; any other width costs as much as a wider
  one), the lattice they lie on, and the *slow* widths; :func:`ladder` extends them
  to the widths ``--round-to auto`` may choose over the whole range.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# How much cheaper than every wider width a width must be to count as a cliff: timing noise
# must not make cliffs.
CLIFF_TOL = 0.02

def isotonic(y: Sequence[float], weights: Sequence[float] | None = None) -> np.ndarray:
    """The least-squares non-decreasing fit of ``y`` (pool adjacent violators)."""
    y = np.asarray(y, dtype=np.float64)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64)
    # Blocks of pooled values: mean, weight, length.
    means: list[float] = []
    wsum: list[float] = []
    sizes: list[int] = []
    for v, wt in zip(y, w):
        means.append(float(v))
        wsum.append(float(wt))
        sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            m2, w2, n2 = means.pop(), wsum.pop(), sizes.pop()
            total = wsum[-1] + w2
            means[-1] = (means[-1] * wsum[-1] + m2 * w2) / total
            wsum[-1] = total
            sizes[-1] += n2
    return np.repeat(np.asarray(means), sizes)


def monotone2d(z: np.ndarray, iterations: int = 100, tol: float = 1e-9) -> np.ndarray:
    """A table non-decreasing along both axes, close to ``z`` (alternating row/column fits)."""
    out = np.asarray(z, dtype=np.float64).copy()
    for _ in range(iterations):
        prev = out.copy()
        out = np.apply_along_axis(isotonic, 1, out) if out.shape[1] > 1 else out
        out = np.apply_along_axis(isotonic, 0, out) if out.shape[0] > 1 else out
        if np.max(np.abs(out - prev)) <= tol * max(1.0, float(np.max(np.abs(out)))):
            break
    # Alternating fits converge to a table monotone in both axes; a final pass makes sure.
    return np.maximum.accumulate(np.maximum.accumulate(out, axis=0), axis=1)


@dataclass
class Steps:
    """What a fine scan of latency against width shows.

    Attributes:
        cliffs: the widths worth keeping, ascending: each is cheaper than every wider
            width (by more than the noise tolerance), so latency jumps right above it:
            the low side of a step. The full width always counts.
        period, offset: when most cliffs lie on one lattice ``offset + k × period``
            (a backend computing channels in blocks), else None.
        slow: widths far dearer than some wider width (a slow kernel path), ascending.
        fit: the monotone envelope at each scanned width: the least latency of any
            width at least as wide (a staircase).
    """

    cliffs: list[int] = field(default_factory=list)
    period: int | None = None
    offset: int | None = None
    slow: list[int] = field(default_factory=list)
    fit: list[float] = field(default_factory=list)


def envelope(ms: Sequence[float]) -> np.ndarray:
    """For ascending widths, the least latency at each width or any wider one (non-decreasing)."""
    y = np.asarray(ms, dtype=np.float64)
    return np.minimum.accumulate(y[::-1])[::-1]


def find_steps(widths: Sequence[int], ms: Sequence[float], unit: int = 1, tol: float = CLIFF_TOL, slow: float = 0.25,
               coverage: float = 0.6) -> Steps:
    """Cliffs (the Pareto-optimal widths), their lattice and the slow widths of a scan.

    Args:
        widths: scanned widths, multiples of ``unit`` apart (every width, or only those a
            bisection needed: an unmeasured width is taken to cost what its next wider
            measured width does).
        ms: latency measured at each width.
        tol: a width is a cliff only if it is this fraction cheaper than every wider one
            (measurement noise must not make cliffs).
        slow: a width is slow when it costs this fraction more than some wider width.
        coverage: the share of the cliffs (the full width aside) a lattice must hold.
    """
    order = np.argsort(np.asarray(widths))
    w = np.asarray(widths, dtype=np.int64)[order]
    y = np.asarray(ms, dtype=np.float64)[order]
    if w.size == 0:
        return Steps()
    env = envelope(y)
    wider = np.append(env[1:], np.inf)  # the least latency of a strictly wider width
    cliffs = [int(w[i]) for i in range(w.size) if y[i] < (1 - tol) * wider[i]]
    slow_w = [int(w[i]) for i in range(w.size - 1) if y[i] > (1 + slow) * wider[i]]
    period, offset = _lattice(cliffs[:-1] if cliffs and cliffs[-1] == w[-1] else cliffs, int(w[-1] - w[0]), unit, coverage)
    return Steps(cliffs=cliffs, period=period, offset=offset, slow=slow_w, fit=[float(v) for v in env])


def _lattice(points: list[int], span: int, unit: int, coverage: float) -> tuple[int | None, int | None]:
    """The widest spacing ``unit × 2^k`` (at most half the span) whose best residue holds ``coverage`` of the points."""
    if len(points) < 2:
        return None, None
    best: tuple[int | None, int | None] = (None, None)
    p = max(1, unit)
    while p <= max(1, span // 2):
        r, n = Counter(x % p for x in points).most_common(1)[0]
        if n >= coverage * len(points):
            best = (p, r)
        p *= 2
    return best


def ladder(steps: Steps, lo: int, hi: int, unit: int = 1, fallback: int = 8) -> list[int]:
    """Widths in ``[lo, hi]`` at the low side of a step, plus ``hi`` (no pruning), ascending.

    With a lattice the cliffs are extended over the whole range (a scan sees only the
    top of it); with cliffs but no lattice, the cliffs, and multiples of ``fallback``
    below the scan; with no scan, multiples of ``fallback`` (in ``unit`` steps).
    """
    unit = max(1, unit)
    if steps.period and steps.offset is not None:
        p, r = steps.period, steps.offset
        cand = set(range(lo + (r - lo) % p, hi + 1, p))
    else:
        q = max(1, fallback) * unit
        below = min(steps.cliffs) if steps.cliffs else hi + 1
        cand = set(steps.cliffs) | {c for c in range(math.ceil(lo / q) * q, hi + 1, q) if c < below}
    bad = set(steps.slow)
    return sorted({c for c in cand if lo <= c <= hi and (hi - c) % unit == 0 and c not in bad} | {hi})
