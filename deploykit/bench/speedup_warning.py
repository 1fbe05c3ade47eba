"""Will the pruned model get faster by what its MACs cut promises? One line when not.

A cut of the MACs becomes a cut of the latency only where the backend's kernels run the new
widths as well as the old ones. Widths off a multiple of 8 (``--round-to 1``) fall off the
vectorized and tensor-core paths, and a ResNet-56 at half the MACs then runs no faster than
the base. Where a latency table or a timing exists, its ratio says so directly; without one,
the widths are the evidence.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

ALIGN = 8  # the width multiple that CPU SIMD (8 fp32 lanes) and GPU tensor cores run at full speed
MIN_EFFICIENCY = 0.5  # below half the promised speedup is "by a wide margin"
MIN_MISALIGNED_SHARE = 0.25
HINT = "use --round-to 8 (the default), or --normalize latency with a table from deploykit profile"


def efficiency(macs_ratio: float, latency_ratio: float) -> float | None:
    """Realized efficiency ``(1 − latency ratio) / (1 − MACs ratio)``: 1 when latency falls as the MACs do."""
    return None if macs_ratio >= 1 else (1 - latency_ratio) / (1 - macs_ratio)


def misaligned(widths: Iterable[tuple[int, int]]) -> tuple[int, int]:
    """``(groups pruned off a multiple of ALIGN they had, groups pruned)`` from ``(full, kept)`` widths."""
    pruned = [(full, kept) for full, kept in widths if kept < full]
    off = sum(1 for full, kept in pruned if full % ALIGN == 0 and kept % ALIGN != 0)
    return off, len(pruned)


def latency_ratio(report: Mapping[str, Any]) -> tuple[float, str] | None:
    """The pruned model's latency ratio a compress report holds: the last timing, else the table's prediction."""
    lat = report.get("latency") or {}
    checks = lat.get("checks") or []
    if checks:
        return float(checks[-1]["measured"]), "measured"
    if lat.get("predicted_ratio") is not None:
        return float(lat["predicted_ratio"]), "predicted by the latency table"
    return None


def speedup_warning(report: Mapping[str, Any], widths: Iterable[tuple[int, int]]) -> str | None:
    """One line when the pruned model will not get faster by what its MACs promise; None when it will.

    Args:
        report: the compress report (``ratios``, ``rounding``, and ``latency`` when a table was used).
        widths: ``(full, kept)`` channel counts of every group.
    """
    macs = float(report["ratios"]["macs"])
    if macs >= 1:
        return None
    lat = latency_ratio(report)
    if lat is not None:
        ratio, source = lat
        eff = efficiency(macs, ratio)
        if ratio < 1 and eff is not None and eff >= MIN_EFFICIENCY:
            return None
        slower = "slower than the base" if ratio >= 1 else "less than half the speedup its MACs promise"
        return (f"warning: the pruned model runs at {ratio:.3f} of the base latency ({source}) for {macs:.3f} of "
                f"the MACs: {slower}; {HINT}")
    off, pruned = misaligned(widths)
    if not pruned or off / pruned < MIN_MISALIGNED_SHARE:
        return None
    round_to = report.get("rounding", {}).get("round_to")
    return (f"warning: {off} of {pruned} pruned groups have widths that are not multiples of {ALIGN} "
            f"(--round-to {round_to}): backends run such widths slower than their MACs say, so the latency may fall "
            f"far less than the MACs ({macs:.3f} of the base); {HINT}")
