"""Pruning to latency: --target-latency stops where the prediction says, --round-to auto lands on the
low side of latency steps, --normalize latency divides by the milliseconds saved."""

from __future__ import annotations

import json

import pytest
import torch

from deploykit.bench.latency_table.cost_model import ladders_for, wants_latency
from deploykit.bench.latency_table.predictor import LatencyModel
from deploykit.compression import TARGETS, CompressConfig
from deploykit.errors import DeployKitError
from deploykit.select import NORMALIZERS, SelectConfig, Target, select_global
from tests.bench import nets
from tests.bench.conftest import SPEC


def _scores(cost_model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {grp.id: torch.rand(grp.channels, generator=g) for grp in cost_model.graph.prunable()}


def _met(sel, cost_model, ratio):
    return sel.predicted.latency_ms <= ratio * cost_model.base.latency_ms


def test_target_latency_stops_at_the_first_chunk_that_meets_the_prediction_then_gives_back(cost_model, smooth_lut):
    cost_model.attach_latency(LatencyModel(cost_model, smooth_lut))
    scores = _scores(cost_model)
    cfg = SelectConfig([Target(TARGETS.get("latency").cost, 0.6)], normalize="latency")
    full = select_global(cost_model, scores, cfg)
    assert full.met and _met(full, cost_model, 0.6)
    chunks = next(m for m in range(1, 500) if _met(select_global(cost_model, scores, SelectConfig(
        cfg.targets, "latency", max_chunks=m)), cost_model, 0.6))
    before = select_global(cost_model, scores, SelectConfig(cfg.targets, "latency", max_chunks=chunks - 1))
    assert not _met(before, cost_model, 0.6)  # one chunk less would not meet it: no chunk beyond the target
    # The full selection is that prefix with the chunks the target can spare given back: a subset, at least as tight.
    prefix = select_global(cost_model, scores, SelectConfig(cfg.targets, "latency", max_chunks=chunks))
    assert all(set(full.remove[g]) <= set(prefix.remove.get(g, [])) for g in full.remove)
    assert prefix.predicted.latency_ms <= full.predicted.latency_ms <= 0.6 * cost_model.base.latency_ms


def test_round_to_auto_lands_on_the_low_side_of_every_step(cost_model, stair_lut):
    lm = LatencyModel(cost_model, stair_lut)
    cost_model.attach_latency(lm)
    round_to, ladders = ladders_for(lm, "auto")
    assert round_to == 1 and ladders["pw"] == [8, 16, 24] and ladders["conv1"] == [8, 16, 24]
    sel = select_global(cost_model, _scores(cost_model), SelectConfig([Target("latency_ms", 0.5)], "latency", round_to,
                                                                      ladders=ladders))
    assert sel.met and sel.remove
    op = {t.layer: t for t in stair_lut.layers.values()}
    for gid, removed in sel.remove.items():
        width = next(g.channels for g in cost_model.groups if g.id == gid) - len(removed)
        assert width in ladders[gid] and width % 8 == 0
        # the low side: one more channel would cost more (a step up), on the staircase backend
        curve = stair_lut.groups[gid]
        assert width + 1 > curve.channels or curve.fit[curve.widths.index(width + 1)] > curve.fit[curve.widths.index(width)]
    assert op  # every layer had a table


def test_latency_normalizer_needs_a_table_and_reads_milliseconds():
    norm = NORMALIZERS.get("latency")
    assert norm({"macs": 1.0, "params": 1.0, "memory": 1.0, "latency": 0.25}) == 0.25
    with pytest.raises(DeployKitError, match="--normalize latency needs a latency table"):
        norm({"macs": 1.0, "params": 1.0, "memory": 1.0})


def test_settings_accept_latency_and_auto_and_reject_the_rest(tmp_path):
    cfg = CompressConfig.parse(model=SPEC, out=str(tmp_path / "o"), target_latency=0.5, round_to="auto", lut="x.json")
    assert cfg.targets == {"latency": 0.5} and cfg.round_to == "auto"
    assert CompressConfig.parse(model=SPEC, out="o", target_macs=0.5, round_to="8").round_to == 8
    for bad in ("eight", 0):
        with pytest.raises(DeployKitError, match=r"--round-to .*: give a positive integer, BLOCK:STEP \(e\.g\. 16:8\) or auto"):
            CompressConfig.parse(model=SPEC, out="o", target_macs=0.5, round_to=bad)
    assert wants_latency("latency", [], 1) and wants_latency("memory", ["latency"], 1) and wants_latency(None, [], "auto")
    assert not wants_latency("memory", ["macs"], 8)


def test_compress_to_a_latency_target_through_the_api(tmp_path, smooth_lut):
    import deploykit

    lut = tmp_path / "lut.json"
    smooth_lut.save(lut)
    out = tmp_path / "art"
    report = deploykit.compress(model=SPEC, out=str(out), target_latency=0.6, criterion="l1", normalize="latency",
                                round_to="auto", lut=str(lut), evaluate_base=False)
    lat = report["latency"]
    assert lat["backend"] == "fake" and lat["predicted_ratio"] <= 0.6
    assert report["base"]["latency_ms"] == pytest.approx(lat["predicted_base_ms"], rel=1e-3)
    plan = json.loads((out / "plan.json").read_text())
    for g in plan["groups"]:
        assert len(g["kept"]) in smooth_lut.groups[g["id"]].ladder
    # the pruned model, timed on the fake backend, is where the prediction said
    built = deploykit.load(str(out), trust_factory=True)  # its plan names this test's own factory
    truth = nets.model_ms(built.model, built.example_input())
    assert truth == pytest.approx(lat["predicted_pruned_ms"], rel=0.02)


def _distorted_backend(monkeypatch, base_ms: float, stuck: float = 0.0, amplify: float = 0.0) -> None:
    """The fake backend, except that whole models carry ``stuck × base_ms`` the table cannot see
    (pruned models are slower, relative to the base, than the table predicts), and every
    millisecond a model saves below ``base_ms`` counts ``1 + amplify`` times (faster than predicted)."""

    def model_fn(self, module, example):
        ms = nets.model_ms(module, example, type(self).fn)
        return nets._Run(ms - amplify * (base_ms - ms) + stuck * base_ms)

    monkeypatch.setattr(nets.FakeTimer, "model_fn", model_fn)


def _compress_to_latency(tmp_path, lut, name: str, checks: int) -> dict:
    import deploykit

    return deploykit.compress(model=SPEC, out=str(tmp_path / name), target_latency=0.6, criterion="l1",
                              normalize="latency", round_to=1, lut=str(lut), evaluate_base=False, latency_checks=checks)


def _base_ms() -> float:
    from deploykit.zoo import build_model

    built = build_model(SPEC)
    return nets.model_ms(built.model, built.example_input())


def _measured(out: str, base_ms: float, stuck: float = 0.0, amplify: float = 0.0) -> float:
    """The distorted backend's latency ratio of the saved model."""
    import deploykit

    m = deploykit.load(out, trust_factory=True)
    ms = nets.model_ms(m.model, m.example_input())
    return (ms - amplify * (base_ms - ms) + stuck * base_ms) / ((1 + stuck) * base_ms)


def _trusted_and_checked(tmp_path, lut, monkeypatch, **distortion) -> tuple[dict, dict, float, float]:
    """Compress to latency 0.6 on the distorted backend trusting the table, then with 3 rounds of checks:
    both reports and both saved models' ratios."""
    path = tmp_path / "lut.json"
    lut.save(path)
    base_ms = _base_ms()
    _distorted_backend(monkeypatch, base_ms, **distortion)
    trusted = _compress_to_latency(tmp_path, path, "trusted", checks=0)
    checked = _compress_to_latency(tmp_path, path, "checked", checks=3)
    return (trusted, checked, _measured(str(tmp_path / "trusted"), base_ms, **distortion),
            _measured(str(tmp_path / "checked"), base_ms, **distortion))


def test_latency_checks_prune_on_until_the_measured_ratio_meets_the_target(tmp_path, smooth_lut, monkeypatch):
    trusted, report, missed, kept = _trusted_and_checked(tmp_path, smooth_lut, monkeypatch, stuck=0.25)
    assert trusted["latency"]["checks"] == []
    assert trusted["latency"]["predicted_ratio"] <= 0.6 < missed  # the premise: trusting the table misses

    checks = report["latency"]["checks"]
    previews = [c for c in checks if c["why"] == "preview"]
    assert previews[0]["aim"] == 0.6 and previews[0]["measured"] > 0.6  # the table's own aim misses
    assert len(previews) >= 2 and previews[1]["aim"] < previews[0]["aim"]  # and the next aims lower
    assert all(a["measured"] > b["measured"] for a, b in zip(previews, previews[1:]))
    last = checks[-1]
    assert last["why"] == "met" and last["measured"] <= 0.6 and last["aim"] is None
    assert len(last["readings"]) == 2  # the removal is the candidate a preview timed: both readings count
    assert last["measured"] == pytest.approx(kept, abs=1e-3)
    assert report["latency"]["predicted_ratio"] == pytest.approx(last["predicted"], abs=1e-3)


def test_a_table_that_is_pessimistic_is_aimed_above_the_target(tmp_path, smooth_lut, monkeypatch):
    trusted, report, overshot, kept = _trusted_and_checked(tmp_path, smooth_lut, monkeypatch, amplify=0.5)
    assert overshot < 0.5  # the premise: trusting the table removes far more than the target needs

    checks = report["latency"]["checks"]
    assert checks[0]["why"] == "preview" and checks[0]["aim"] == 0.6 and checks[0]["measured"] < 0.6 * 0.95
    assert any(c["aim"] > 0.6 for c in checks if c["why"] == "preview")
    assert overshot < kept <= 0.6 and checks[-1]["measured"] == pytest.approx(kept, abs=1e-3)
    assert report["latency"]["predicted_ratio"] > trusted["latency"]["predicted_ratio"]
    assert report["ratios"]["macs"] > trusted["ratios"]["macs"]  # fewer channels removed for the same target


def test_latency_checks_stop_after_the_rounds_given(tmp_path, smooth_lut, monkeypatch):
    lut = tmp_path / "lut.json"
    smooth_lut.save(lut)
    _distorted_backend(monkeypatch, _base_ms(), stuck=2.0)
    checks = _compress_to_latency(tmp_path, lut, "one", checks=1)["latency"]["checks"]
    # two candidates timed before removal, then: timed, pruned further, timed
    assert [c["why"] for c in checks] == ["preview", "preview", "met", "met"]
    assert checks[2]["aim"] is not None and checks[-1]["aim"] is None
    assert checks[-1]["measured"] > 0.6  # a miss the rounds could not close is reported, not hidden


def test_latency_check_needs_the_tables_backend_and_device(smooth_lut):
    from deploykit.bench.latency_check import LatencyCheck
    from deploykit.bench.latency_table.variants import prune_to_widths
    from deploykit.zoo import build_model

    built = build_model(SPEC)
    model, x = built.model, built.example_input()
    key = smooth_lut.key
    assert LatencyCheck.for_table(key.model_copy(update={"device": "Jetson Orin"}), model, x) is None
    assert LatencyCheck.for_table(key.model_copy(update={"backend": "trt-on-another-machine"}), model, x) is None
    check = LatencyCheck.for_table(key, model, x)
    assert check is not None and check.ratio(model) == pytest.approx(1.0)
    half = prune_to_widths(model, x, {"pw": 8, "conv1": 8})
    assert check.ratio(half) == pytest.approx(nets.model_ms(half, x) / nets.model_ms(model, x))


def test_cli_prints_the_measured_latency_ratio(tmp_path, smooth_lut, monkeypatch, capsys):
    from deploykit.cli.main import main as cli
    from deploykit.zoo import build_model

    lut = tmp_path / "lut.json"
    smooth_lut.save(lut)
    built = build_model(SPEC)
    _distorted_backend(monkeypatch, nets.model_ms(built.model, built.example_input()), stuck=0.25)
    out = tmp_path / "art"
    rc = cli(["compress", SPEC, "--target-latency", "0.6", "--normalize", "latency", "--round-to", "1",
              "--criterion", "l1", "--lut", str(lut), "--out", str(out)])
    printed = capsys.readouterr().out
    checks = json.loads((out / "report.json").read_text())["latency"]["checks"]
    assert rc == 0 and len(checks) > 1
    assert f"measured latency {checks[-1]['measured']:.3f} of the base (target 0.6" in printed
    assert f"after {len(checks)} timing(s)" in printed


def test_progressive_pruning_times_the_model_on_the_way_and_meets_the_measured_target(tmp_path, monkeypatch,
                                                                                       digits_model):
    import deploykit
    from deploykit.bench.latency_table.profile import Profiler
    from deploykit.graph.costs import CostModel
    from deploykit.graph.groups import ModelGraph
    from tests.bench.conftest import fake_config

    spec = "digits:demo"
    x = digits_model.example_input()
    lut = tmp_path / "lut.json"
    Profiler(CostModel(ModelGraph(digits_model.traced, x)), spec, fake_config(scan=0)).run().save(lut)
    _distorted_backend(monkeypatch, nets.model_ms(digits_model.model, x), stuck=0.25)
    r = deploykit.compress(model=spec, out=str(tmp_path / "p"), data="digits", target_latency=0.6, criterion="l1",
                           normalize="latency", schedule="progressive", interval=1, finetune_epochs=1.0, batch_size=32,
                           bn_batches=2, round_to=1, lut=str(lut), evaluate_base=False)
    checks = r["latency"]["checks"]
    progress = [c for c in checks if c["why"] == "progress"]
    assert progress and all(c["aim"] <= 0.6 for c in progress)  # aimed while pruning, below the user's target
    assert [c["why"] for c in checks][-1] == "met" and checks[-1]["measured"] <= 0.6
    assert all(a["iteration"] <= b["iteration"] for a, b in zip(checks, checks[1:]))
    assert r["iterations"]["pruning"] >= checks[-1]["iteration"]
