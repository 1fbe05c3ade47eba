"""Latency in compression: attach a table's predictions to the cost model when a run asks for them.

``--normalize latency``, ``--target-latency R`` and ``--round-to auto`` all read the
latency table: the one given with ``--lut``, else the cached table for the default
setting (ONNX Runtime on this CPU, batch 1, one thread), measured first, with progress
bars, when there is none.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from deploykit.bench.latency_table.predictor import LatencyModel
from deploykit.bench.latency_table.profile import ProfileConfig, load_or_profile
from deploykit.graph.costs import CostModel
from deploykit.progress import Reporter
from deploykit.select.block_rounding import BlockRounding
from deploykit.select.targets import LATENCY_TARGET


def wants_latency(normalize: str | None, targets: Iterable[str], round_to: int | str) -> bool:
    """Whether a compress run needs a latency table."""
    return normalize == "latency" or LATENCY_TARGET in set(targets) or round_to == "auto"


def attach_latency(cost_model: CostModel, spec: str, *, normalize: str | None, targets: Iterable[str],
                   round_to: int | str, lut: str | None = None, ignore: Sequence[str] = (),
                   reporter: Reporter | None = None, profile: ProfileConfig | None = None) -> LatencyModel | None:
    """Attach latency predictions to ``cost_model`` when the run needs them; returns the model, else None.

    Raises:
        DeployKitError: ``lut`` is missing, malformed or measured for another model or setting.
    """
    if not wants_latency(normalize, targets, round_to) and lut is None:
        return None
    rep = reporter or Reporter()
    table, source = load_or_profile(cost_model, spec, profile or ProfileConfig(), rep, ignore, lut_path=lut)
    model = LatencyModel(cost_model, table)
    cost_model.attach_latency(model)
    k = table.key
    rep.log(f"latency table: {source} ({k.backend}, {k.device}, batch {k.batch}, threads {k.threads or 'auto'}); "
            f"predicted base {cost_model.base.latency_ms:.3f} ms, measured {table.base_ms:.3f} ms")
    return model


def ladders_for(model: LatencyModel | None, round_to: int | str,
                cost_model: CostModel | None = None) -> tuple[int, dict[str, list[int]] | None]:
    """``(round_to, ladders)`` for :class:`~deploykit.select.SelectConfig`: ``auto`` means step 1 on the
    table's ladders; ``BLOCK:STEP`` steps of STEP on the widths :class:`BlockRounding` allows."""
    if isinstance(round_to, str) and ":" in round_to:
        assert cost_model is not None, "round_to BLOCK:STEP needs the cost model's groups"
        rule = BlockRounding.parse(round_to)
        return rule.step, {g.id: rule.widths(full) for g, full in zip(cost_model.groups, cost_model.full)}
    if round_to != "auto":
        return int(round_to), None
    assert model is not None, "round_to auto needs the latency model attached first"
    return 1, model.ladders()


def latency_report(model: LatencyModel, cost_model: CostModel) -> dict[str, object]:
    """What report.json says about latency: the table, and predicted base, pruned and their ratio."""
    base = float(cost_model.base.latency_ms or model.predict(cost_model.widths_full()))
    now = model.predict(cost_model.widths())
    k = model.lut.key
    return {"backend": k.backend, "device": k.device, "batch": k.batch, "threads": k.threads,
            "measured_base_ms": model.lut.base_ms, "predicted_base_ms": round(base, 4),
            "predicted_pruned_ms": round(now, 4), "predicted_ratio": round(now / base, 4) if base > 0 else None}
