"""Cost targets, schedules and their bad input, through the API and the CLI."""

import json
from pathlib import Path

import click
import pytest

import deploykit
from deploykit.cli.compress_cmd import target_options
from deploykit.cli.main import main
from deploykit.compression import TARGETS, CompressConfig, TargetKind
from deploykit.errors import DeployKitError
from deploykit.graph.costs import CostModel, Costs
from deploykit.graph.groups import ModelGraph
from deploykit.train import dcff, search  # noqa: F401  (they register their schedules)
from deploykit.train.schedules import SCHEDULES
from deploykit.zoo import build_model


COST = {"macs": "macs", "params": "params", "memory": "activation_bytes"}


def costs_with_one_chunk_back(out: Path, round_to: int) -> tuple[Costs, Costs, list[tuple[str, Costs]]]:
    """The cost model the run used, at the artifact's widths: base, final, and final with one chunk of
    each pruned group given back (the state before that group's last removal).

    A chunk is what selection removes at once: ``round_to`` channels, or what is left up to the
    traced width when that is not a multiple of it.
    """
    built = build_model("digits:demo")
    graph = ModelGraph(built.traced, built.example_input())
    cost_model = CostModel(graph)
    for entry in json.loads((out / "plan.json").read_text())["groups"]:
        kept = set(entry["kept"])
        graph.remove(entry["id"], [c for c in graph.get(entry["id"]).kept if c not in kept])
    w = cost_model.widths()
    back = []
    for gi, g in enumerate(cost_model.groups):
        if w[gi] < cost_model.full[gi]:
            w2 = list(w)
            w2[gi] = min(cost_model.full[gi], w[gi] + round_to)
            back.append((g.id, cost_model.predict(w2)))
    return cost_model.base, cost_model.predict(w), back


@pytest.mark.parametrize("kw", [{"target_memory": 0.8}, {"target_params": 0.5, "target_macs": 0.7},
                                {"targets": {"memory": 0.9, "macs": 0.6}}], ids=["memory", "params+macs", "dict"])
def test_every_target_is_met(kw, tmp_path, digits_model):
    out = tmp_path / "a"
    r = deploykit.compress(model="digits:demo", out=str(out), criterion="l1", **kw)
    targets = kw.get("targets") or {k[len("target_"):]: v for k, v in kw.items()}
    assert r["targets"] == targets
    for name, ratio in targets.items():
        assert r["pruned"][COST[name]] <= ratio * r["base"][COST[name]], name
    # Tight to the granularity used, whatever the trained weights (they pick *which* chunks go):
    # after the targets are met, selection gives back every chunk the targets can spare, so giving
    # back the last chunk of *any* pruned group (all others at their final widths) must miss a target.
    # No tighter bound holds: one chunk of a group may be worth more than the distance to the target.
    base, final, back = costs_with_one_chunk_back(out, r["rounding"]["round_to"])
    # The premise: the cost model predicts what the report measured, so its one-chunk-back costs are exact.
    assert {k: getattr(base, k) for k in COST.values()} == {k: r["base"][k] for k in COST.values()}
    assert {k: getattr(final, k) for k in COST.values()} == {k: r["pruned"][k] for k in COST.values()}
    assert back, "nothing was pruned"
    spared = [gid for gid, c in back if all(getattr(c, COST[n]) <= ratio * getattr(base, COST[n])
                                            for n, ratio in targets.items())]
    assert not spared, {gid: c.ratio(base) for gid, c in back}


def test_target_names_come_from_the_registry():
    assert {"macs", "params", "memory"} <= set(TARGETS.names())
    with pytest.raises(DeployKitError, match="unknown target 'speed'; valid: latency, macs, memory, params"):
        CompressConfig.parse(model="m", out="o", target_speed=0.5)
    with pytest.raises(DeployKitError, match="no target: pass at least one of --target-latency, --target-macs"):
        CompressConfig.parse(model="m", out="o")
    with pytest.raises(DeployKitError, match="^--target-macs 'half': Input should be a valid number"):
        CompressConfig.parse(model="m", out="o", target_macs="half")  # the flag the user set, not the dict it fills
    TARGETS.register("testonly", TargetKind("macs", "test cost"))
    try:
        cmd = target_options(click.command()(lambda **kw: None))
        assert "--target-testonly" in {o for p in cmd.params for o in p.opts}
        assert CompressConfig.parse(model="m", out="o", target_testonly=0.3).targets == {"testonly": 0.3}
    finally:
        TARGETS._entries.pop("testonly")


def _bad(args, capsys):
    code = main([str(a) for a in args])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


@pytest.mark.parametrize("extra, message", [
    (["--schedule", "progresive"], "unknown schedule 'progresive' (did you mean 'progressive'?); valid: " + ", ".join(sorted(SCHEDULES))),
    (["--schedule", "progressive"], "--schedule progressive prunes while fine-tuning: pass --data and --finetune-epochs"),
    (["--optimizer", "sgdd"], "unknown optimizer 'sgdd' (did you mean 'sgd'?)"),
    (["--target-params", "1.5"], "--target-params 1.5 is outside (0, 1]"),
    (["--kd-alpha", "2"], "--kd-alpha 2.0: Input should be less than or equal to 1"),
    (["--interval", "0"], "--interval 0: Input should be greater than or equal to 1"),
    (["--device", "tpu"], "--device 'tpu' is not a device; valid: cpu, cuda, cuda:N"),
])
def test_bad_schedule_options(extra, message, tmp_path, capsys):
    out = tmp_path / "out"
    line = _bad(["compress", "cifar:resnet20", "--target-macs", "0.5", "--criterion", "l1", "--out", out, *extra], capsys)
    assert message in line
    assert list(tmp_path.iterdir()) == []


def test_resume_with_other_options_is_refused_and_touches_nothing(tmp_path, capsys):
    from deploykit.train.checkpoint import CheckpointDir
    from deploykit.compress_job.checkpointing import fingerprint

    out = tmp_path / "out"
    old = CompressConfig.parse(model="cifar:resnet20", out=str(out), target_macs=0.5, criterion="l1", lr=0.02)
    CheckpointDir(out / "checkpoints").save(4, {"model": {}}, {"config": fingerprint(old), "state": {}, "plan": []})
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    line = _bad(["compress", "cifar:resnet20", "--target-macs", "0.5", "--criterion", "l1", "--out", out, "--resume"], capsys)
    assert "--resume: the checkpoint in" in line and "was written with lr=0.02, not 0.01" in line
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    # Other files beside the checkpoints still need --force.
    (out / "notes.txt").write_text("mine")
    line = _bad(["compress", "cifar:resnet20", "--target-macs", "0.5", "--criterion", "l1", "--out", out, "--resume"], capsys)
    assert "holds more than checkpoints (notes.txt); pass --force" in line


def test_progressive_report_and_extra_eval_sets(tmp_path, digits_model):
    r = deploykit.compress(model="digits:demo", out=str(tmp_path / "p"), data="digits", eval_data=["digits:train"],
                           target_macs=0.8, schedule="progressive", interval=2, channels_per_step=2, finetune_epochs=0.5,
                           batch_size=32, bn_batches=2, kd=True)
    assert r["schedule"] == "progressive" and r["normalize"] == "memory" and r["training"]["kd"] is True
    assert set(r["eval"]) == {"digits:test", "digits:train"}
    for spec, stages in r["eval"].items():
        assert set(stages) == {"base", "after_pruning", "after_bn_recalibration", "final"}
        assert all(0 <= v <= 100 for v in stages.values()), spec
    assert r["pruned"]["top1"] == r["eval"]["digits:test"]["final"]
    it = r["iterations"]
    assert it["pruning"] <= it["done"] and it["done"] == max(it["budget"], it["pruning"])
    assert all(step % 2 == 0 for step, _, _ in r["removals"])
    assert r["channels_removed"] == sum(len(x[2]) for x in r["removals"]) > 0
    assert r["pruned"]["macs"] <= 0.8 * r["base"]["macs"]
    assert json.loads((tmp_path / "p" / "report.json").read_text())["removals"] == r["removals"]
    built = deploykit.load(str(tmp_path / "p"))
    assert sum(p.numel() for p in built.model.parameters()) == r["pruned"]["params"]


@pytest.mark.parametrize("extra, k, some_unrounded", [([], 8, False), (["--round-to", "32"], 32, True)],
                         ids=["default", "round-to-32"])
def test_round_to_keeps_multiples_and_counts_what_it_could_not(extra, k, some_unrounded, tmp_path, digits_model, capsys):
    out = tmp_path / "r"
    assert main(["compress", "digits:demo", "--target-macs", "0.8", "--criterion", "l1", "--out", str(out),
                 "--json", str(tmp_path / "r.json"), *extra]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    rounding = report["rounding"]
    assert rounding["round_to"] == k
    plan = json.loads((out / "plan.json").read_text())
    unrounded = rounding["unrounded"]
    for entry in plan["groups"]:
        if entry["id"] not in unrounded:
            assert len(entry["kept"]) % k == 0, entry["id"]
    assert bool(unrounded) == some_unrounded
    assert rounding["unrounded_layers"] == len({lay for d in unrounded.values() for lay in d["layers"]})
    for d in unrounded.values():
        assert d["layers"] and f"multiple of {k}" in d["reason"]
    if unrounded:
        assert f"{rounding['unrounded_layers']} layers in {len(unrounded)} groups could not be rounded" in capsys.readouterr().out
