import json

import pytest
import torch

import deploykit
from deploykit.errors import DeployKitError
from deploykit.prune.artifact import load_artifact


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, digits_model):
    out = tmp_path_factory.mktemp("art") / "pruned"
    report = deploykit.compress(model="digits:demo", out=str(out), target_macs=0.5, criterion="l1", round_to=8)
    return out, report


def test_artifact_layout_and_report(artifact):
    out, report = artifact
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "plan.json", "report.json"]
    assert report["pruned"]["macs"] <= 0.5 * report["base"]["macs"]
    plan = json.loads((out / "plan.json").read_text())
    assert plan["base_spec"] == "digits:demo" and plan["input_shape"] == [1, 1, 16, 16]
    assert {"torch", "torch-pruning", "deploykit"} <= set(plan["versions"])
    for g in plan["groups"]:
        assert len(g["kept"]) % 8 == 0 and len(g["kept"]) < g["channels"]
        assert g["kept"] == sorted(set(g["kept"]))


def test_reload_without_pickle_gives_identical_outputs(artifact, monkeypatch):
    out, _ = artifact
    first = load_artifact(out)

    def no_pickle(*a, **k):
        raise AssertionError("loading an artifact must not unpickle")

    monkeypatch.setattr(torch, "load", no_pickle)
    again = deploykit.load(str(out))
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(first.model(x), again.model(x))
    assert again.base_spec == "digits:demo" and again.labels == [str(i) for i in range(10)]


def test_saved_outputs_equal_model_at_save_time(tmp_path, digits_model):
    from deploykit.graph.groups import ModelGraph
    from deploykit.prune.artifact import save_artifact
    from deploykit.prune.plan import make_plan
    from deploykit.zoo import build_model

    built = build_model("digits:demo")
    graph = ModelGraph(built.model, built.example_input())
    graph.remove("layer1.0.conv1", [0, 3, 7])
    graph.remove("stem.0", list(range(0, 32, 4)))
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        ref = built.model(x)
    save_artifact(tmp_path / "a", built.model, make_plan(built, graph), {})
    with torch.no_grad():
        assert torch.equal(load_artifact(tmp_path / "a").model(x), ref)


def test_recompressing_an_artifact_composes_the_plan(artifact, tmp_path):
    out, report = artifact
    again = deploykit.compress(model=str(out), out=str(tmp_path / "twice"), target_macs=0.8, criterion="l2")
    plan1 = json.loads((out / "plan.json").read_text())
    plan2 = json.loads((tmp_path / "twice" / "plan.json").read_text())
    assert plan2["base_spec"] == "digits:demo"
    first = {g["id"]: set(g["kept"]) for g in plan1["groups"]}
    for g in plan2["groups"]:
        assert set(g["kept"]) <= first.get(g["id"], set(range(g["channels"])))
    reloaded = load_artifact(tmp_path / "twice")
    assert again["pruned"]["params"] == sum(p.numel() for p in reloaded.model.parameters())


def test_plan_that_does_not_fit_the_model(tmp_path, artifact):
    out, _ = artifact
    plan = json.loads((out / "plan.json").read_text())
    plan["groups"][0]["id"] = "no.such.layer"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(DeployKitError, match="'no.such.layer' is not a channel group"):
        load_artifact(bad)
