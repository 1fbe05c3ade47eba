"""Every file deploykit reads is validated before use: hand-edited plan.json, sidecars and
checkpoint metadata exit 2 with one line naming the file and what is wrong, and nothing is written."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import deploykit
from deploykit.config import read_document
from deploykit.errors import DeployKitError
from deploykit.export.sidecar import SidecarDoc, read_sidecar, sidecar_path
from deploykit.train import checkpoint as ck
from deploykit.zoo.base import Preprocess
from tests.cli.test_bad_input import run_bad
from tests.trust import cifar_shards, copy_artifact, edit_json, shared_artifact, shared_onnx, snapshot


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    return shared_artifact(tmp_path_factory)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """The artifact exported to ONNX (with its sidecar)."""
    return shared_onnx(tmp_path_factory)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return cifar_shards(tmp_path_factory.mktemp("cifar") / "data")


def _set(*keys, value):
    """A plan/sidecar edit: set ``doc[k1][k2]... = value``."""
    def change(doc):
        for k in keys[:-1]:
            doc = doc[k]
        doc[keys[-1]] = value
    return change


def _delete(*keys):
    def change(doc):
        for k in keys[:-1]:
            doc = doc[k]
        del doc[keys[-1]]
    return change


def _deep(doc):
    doc["labels"] = "DEEP"


PLAN_CASES = {
    # types (a TypeError before)
    "input_shape a string": (_set("input_shape", value="1x3x32x32"), "input_shape: Input should be a valid list"),
    "input_shape too short": (_set("input_shape", value=[1]), "input_shape: List should have at least 2 items"),
    "input_shape negative": (_set("input_shape", value=[1, 3, -32, 32]), "input_shape.2: Input should be greater than or equal to 1"),
    "input_shape huge": (_set("input_shape", value=[1, 3, 100000, 100000]), "has more than 134,217,728 elements"),
    "input_shape a bool": (_set("input_shape", value=[True, 3, 32, 32]), "input_shape.0: Input should be a valid integer"),
    "input_shape wrong channels": (_set("input_shape", value=[1, 1, 32, 32]), "rejects input shape 1x1x32x32"),
    "std 0": (_set("preprocess", "std", value=[0.2, 0, 0.2]), "preprocess.std.1: Input should be greater than 0 (got 0)"),
    "std too short": (_set("preprocess", "std", value=[0.2]), "preprocess: std has 1 values for 3 channels"),
    "mean NaN": (_set("preprocess", "mean", value=[float("nan"), 0, 0]), "preprocess.mean.0: Input should be a finite number"),
    "size 100000²": (_set("preprocess", "size", value=[100000, 100000]), "preprocess.size.0: Input should be less than or equal to 16384"),
    "size 3 values": (_set("preprocess", "size", value=[32, 32, 3]), "preprocess.size: List should have at most 2 items"),
    "scale 0": (_set("preprocess", "scale", value=0), "preprocess.scale: Input should be greater than 0"),
    "color": (_set("preprocess", "color", value="CMYK"), "preprocess.color: Input should be 'RGB', 'BGR' or 'GRAY'"),
    "layout": (_set("preprocess", "layout", value="NHWC"), "preprocess.layout: Input should be 'NCHW'"),
    "preprocess key": (_set("preprocess", "gamma", value=2.2), "preprocess.gamma: Extra inputs are not permitted"),
    "no preprocess": (_delete("preprocess"), "preprocess: Field required"),
    "labels a string": (_set("labels", value="cat"), "labels: Input should be a valid list"),
    "labels ints": (_set("labels", value=list(range(10))), "labels.0: Input should be a valid string"),
    "labels short": (_set("labels", value=["cat", "dog"]), "gives 2 labels but the model has 10 outputs"),
    "format": (_set("format", value="onnx"), "format: Input should be 'deploykit-plan'"),
    "version": (_set("version", value=2), "version: Input should be 1 (got 2)"),
    "top-level key": (_set("run", value="rm -rf /"), "run: Extra inputs are not permitted"),
    "base_spec a number": (_set("base_spec", value=20), "base_spec: Input should be a valid string"),
    "base_spec a path": (_set("base_spec", value="../other-artifact"), "base_spec: must be a model family spec"),
    "base_spec itself": (_set("base_spec", value="{art}"), "never a path"),
    "base_spec dot": (_set("base_spec", value="."), "never a path"),
    "base_spec unknown family name": (_set("base_spec", value="cifar:resnet99"), "unknown cifar model 'resnet99'"),
    "kept unsorted": (_set("groups", 0, "kept", value=[3, 1, 2]), "groups.0: kept indices must be unique and ascending; kept[1] = 1 follows 3"),
    "kept duplicate": (_set("groups", 0, "kept", value=[1, 1, 2]), "kept indices must be unique and ascending"),
    "kept out of range": (_set("groups", 0, "kept", value=[0, 16]), "kept index 16 is out of range for 16 channels (valid: 0..15)"),
    "kept negative": (_set("groups", 0, "kept", value=[-1, 2]), "groups.0.kept.0: Input should be greater than or equal to 0"),
    "kept empty": (_set("groups", 0, "kept", value=[]), "groups.0.kept: List should have at least 1 item"),
    "kept floats": (_set("groups", 0, "kept", value=[0.0, 1.0]), "groups.0.kept.0: Input should be a valid integer"),
    "channels 0": (_set("groups", 0, "channels", value=0), "groups.0.channels: Input should be greater than or equal to 1"),
    "channels not the model's": (_set("groups", 0, "channels", value=20), "has 20 channels, the model 16"),
    "group id unknown": (_set("groups", 0, "id", value="no.such.layer"), "plan group 'no.such.layer' is not a channel group"),
    "group twice": (lambda doc: doc["groups"].append(doc["groups"][0]), "groups: group 'layer1.0.conv1' appears twice"),
    "group key missing": (_delete("groups", 0, "kept"), "groups.0.kept: Field required"),
    "groups a dict": (_set("groups", value={"conv1": [1]}), "groups: Input should be a valid list"),
    "ignore unknown module": (_set("ignore", value=["layer9"]), "plan.json: ignore 'layer9' names no module of cifar:resnet20"),
    "deep nesting": (_deep, "nests too deeply"),
}


def _write_plan(art: Path, case: str) -> None:
    change, _ = PLAN_CASES[case]
    plan_path = art / "plan.json"
    edit_json(plan_path, change)
    text = plan_path.read_text().replace("{art}", str(art))
    if case == "deep nesting":  # 100000 nested lists: a RecursionError (3,000 lines of stderr) before
        text = text.replace('"DEEP"', "[" * 100000 + "]" * 100000)
    plan_path.write_text(text)


@pytest.mark.parametrize("case", sorted(PLAN_CASES))
def test_hand_edited_plan_is_one_line_exit_2(case, artifact, tmp_path, capsys):
    art = copy_artifact(artifact, tmp_path / "art")
    _write_plan(art, case)
    before = snapshot(tmp_path)
    line = run_bad(["inspect", art], capsys)
    assert PLAN_CASES[case][1] in line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("case", ["std 0", "kept out of range", "labels short", "deep nesting", "base_spec itself"])
def test_hand_edited_plan_writes_nothing_on_export_and_eval(case, artifact, shards, tmp_path, capsys):
    art = copy_artifact(artifact, tmp_path / "art")
    _write_plan(art, case)
    before = snapshot(tmp_path)
    for args in (["export", art, "--onnx", tmp_path / "m.onnx", "--json", tmp_path / "r.json"],
                 ["eval", art, "--data", f"cifar10:{shards}", "--json", tmp_path / "r.json"]):
        assert PLAN_CASES[case][1] in run_bad(args, capsys)
        assert snapshot(tmp_path) == before
    with pytest.raises(DeployKitError, match="plan.json"):
        deploykit.Engine(str(art))


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"", "is not valid JSON: Expecting value"),
        (b'{"format": "deploykit-plan", "version": 1, "base_sp', "is not valid JSON: Unterminated string"),
        (b'{"format": "deploykit-plan\xff\xfe"}', "is not valid JSON: not UTF-8 text"),
        (b"[1, 2, 3]", "Input should be a valid dictionary"),
        (b"1" * 5000, "is not valid JSON: Exceeds the limit"),
        (b'{"format": "deploykit-plan", "version": 1e999}', "version: Input should be 1"),
    ],
    ids=["empty", "truncated", "not utf-8", "a list", "5000-digit number", "infinity"],
)
def test_unreadable_plan_is_one_line_exit_2(raw, message, artifact, tmp_path, capsys):
    art = copy_artifact(artifact, tmp_path / "art")
    (art / "plan.json").write_bytes(raw)
    assert message in run_bad(["inspect", art], capsys)


def test_plan_json_that_is_a_directory(artifact, tmp_path, capsys):
    art = copy_artifact(artifact, tmp_path / "art")
    (art / "plan.json").unlink()
    (art / "plan.json").mkdir()
    assert "is not a deploykit artifact: no plan.json" in run_bad(["inspect", art], capsys)


def test_load_of_something_not_a_path_is_a_user_error():
    for bad in (None, 3, ["a"]):
        with pytest.raises(DeployKitError, match="is a directory path|is a string"):
            deploykit.load(bad)
        with pytest.raises(DeployKitError, match="MODEL spec is a string"):
            deploykit.build_model(bad)


# -- sidecars -----------------------------------------------------------------------------------------------

SIDECAR_CASES = {
    "std 0": (_set("preprocess", "std", value=[0, 0.2, 0.2]), "preprocess.std.0: Input should be greater than 0"),
    "size 100000²": (_set("preprocess", "size", value=[100000, 100000]), "preprocess.size.0: Input should be less than or equal to 16384"),
    "labels short": (_set("labels", value=["cat"]), "gives 1 labels but the model has 10 outputs"),
    "labels long": (_set("labels", value=[str(i) for i in range(11)]), "gives 11 labels but the model has 10 outputs"),
    "labels ints": (_set("labels", value=[1, 2]), "labels.0: Input should be a valid string"),
    "no preprocess": (_delete("preprocess"), "preprocess: Field required"),
    "preprocess a list": (_set("preprocess", value=[1, 2]), "preprocess: Input should be a valid dictionary"),
    "output not listed": (_set("output", value="logits"), "output 'logits' is not one of outputs"),
    "task": (_set("task", value="segmentation"), "task: Input should be 'classification' or 'detection'"),
    "precision": (_set("precision", value="int4"), "precision: Input should be 'fp32', 'fp16' or 'int8'"),
    "extra key": (_set("postprocess", value="eval(x)"), "postprocess: Extra inputs are not permitted"),
    "opset a string": (_set("opset", value="17"), "opset: Input should be a valid integer"),
    "input_shape zero": (_set("input_shape", value=[1, 3, 0, 32]), "input_shape.2: Input should be greater than or equal to 1"),
}


def _sidecar_copy(exported: Path, tmp_path: Path, change=None, raw: bytes | None = None) -> Path:
    onnx = tmp_path / "m.onnx"
    shutil.copy(exported, onnx)
    shutil.copy(sidecar_path(exported), sidecar_path(onnx))
    if change is not None:
        edit_json(sidecar_path(onnx), change)
    if raw is not None:
        sidecar_path(onnx).write_bytes(raw)
    return onnx


@pytest.mark.parametrize("case", sorted(SIDECAR_CASES))
def test_hand_edited_sidecar_is_one_line(case, exported, shards, tmp_path, capsys):
    change, message = SIDECAR_CASES[case]
    onnx = _sidecar_copy(exported, tmp_path, change)
    before = snapshot(tmp_path)
    with pytest.raises(DeployKitError) as e:
        deploykit.Engine(str(onnx))
    assert message in str(e.value) and "\n" not in str(e.value)
    if not case.startswith("labels"):  # eval reads the preprocessing, not the labels
        assert message in run_bad(["eval", onnx, "--data", f"cifar10:{shards}", "--json", tmp_path / "r.json"], capsys)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("raw, message", [(b'{"source": "x", "inp', "is not valid JSON"), (b"\xff" * 10, "not UTF-8"),
                                          (b"null", "Input should be a valid dictionary")], ids=["truncated", "binary", "null"])
def test_corrupt_sidecar_is_one_line_in_eval_bench_and_engine(raw, message, exported, shards, tmp_path, capsys):
    onnx = _sidecar_copy(exported, tmp_path, raw=raw)
    assert message in run_bad(["eval", onnx, "--data", f"cifar10:{shards}"], capsys)
    with pytest.raises(DeployKitError, match=message):
        deploykit.Engine(str(onnx))


def test_sidecar_round_trip_and_engine_labels(exported):
    side = read_sidecar(exported)
    assert side["labels"][0] == "airplane" and "precision" not in side  # keys not written are not invented
    assert Preprocess.from_dict(side["preprocess"]).size == (32, 32)
    with deploykit.Engine(str(exported)) as engine:
        assert engine.predict(np.zeros((32, 32, 3), np.uint8)).label in side["labels"]


def test_precision_and_engine_keys_are_part_of_the_schema(exported):
    doc = {**read_sidecar(exported), "precision": "int8", "kept_fp32_ops": ["Softmax"],
           "calibration": {"data": "cifar10:x", "samples": 256, "method": "minmax", "activations": "a", "weights": "w"},
           "tensorrt": {"tensorrt": "10.0", "engine": "m.engine"}}
    assert SidecarDoc.model_validate(doc).precision == "int8"


def test_preprocess_from_dict_refuses_std_0():
    good = Preprocess(size=(32, 32)).to_dict()
    assert Preprocess.from_dict(good) == Preprocess(size=(32, 32))
    with pytest.raises(DeployKitError, match="std.0: Input should be greater than 0"):
        Preprocess.from_dict({**good, "std": (0.0, 1.0, 1.0)})


def test_read_document_messages_are_one_line_and_capped(tmp_path):
    from pydantic import BaseModel, field_validator

    class Doc(BaseModel):
        name: str

        @field_validator("name")
        @classmethod
        def _v(cls, v):
            raise ValueError("first line\nsecond line\n" + "x" * 5000)

    p = tmp_path / "d.json"
    p.write_text(json.dumps({"name": "a\nb" * 3000}))
    with pytest.raises(DeployKitError) as e:
        read_document(p, Doc, "a document")
    msg = str(e.value)
    assert "\n" not in msg and len(msg) <= 400 and "first line second line" in msg


# -- checkpoints --------------------------------------------------------------------------------------------

def _checkpoint(tmp_path: Path, plan=None) -> ck.CheckpointDir:
    import torch

    cd = ck.CheckpointDir(tmp_path / "ck")
    cd.save(4, {"model": {"w": torch.ones(2)}}, {"state": {"iteration": 4}, "plan": plan or [{"id": "conv1", "kept": [0, 2]}],
                                                  "config": {"model": "cifar:resnet20"}, "world_size": 1})
    return cd


def _rehash(meta: dict) -> None:
    """What a careful forger would do: recompute the metadata's own hash after editing it."""
    meta["sha256"]["meta.json"] = ck._meta_digest(meta)


META_CASES = {
    "edited, hash not updated": (_set("plan", 0, "id", value="layer9"), False, "does not match its recorded hash"),
    "unknown key": (_set("evil", value=1), True, "evil: Extra inputs are not permitted"),
    "state key": (_set("state", "speed", value=9), True, "state.speed: Extra inputs are not permitted"),
    "kept unsorted": (_set("plan", 0, "kept", value=[2, 0]), True, "plan.0: kept indices must be unique and ascending"),
    "iteration negative": (_set("iteration", value=-1), True, "iteration: Input should be greater than or equal to 0"),
    "old version": (_set("version", value=1), True, "version: Input should be 2"),
    "sha256 not hex": (_set("sha256", "tensors.safetensors", value="zz"), True, "String should match pattern"),
}


@pytest.mark.parametrize("case", sorted(META_CASES))
def test_a_bad_checkpoint_meta_is_skipped_with_its_reason(case, tmp_path):
    change, rehash, message = META_CASES[case]
    cd = _checkpoint(tmp_path)
    meta_path = next((tmp_path / "ck").glob("step-*")) / "meta.json"
    edit_json(meta_path, lambda m: (change(m), rehash and _rehash(m)))
    assert cd.latest() is None
    [(_, why)] = cd.skipped
    assert message in why and "\n" not in why and str(meta_path) in why


def test_a_checkpoint_naming_an_unknown_group_is_one_line_not_keyerror(tmp_path):
    from deploykit.graph.groups import ModelGraph
    from deploykit.zoo import build_model

    _checkpoint(tmp_path, plan=[{"id": "no.such.layer", "kept": [0, 1]}])
    ckpt = ck.CheckpointDir(tmp_path / "ck").latest()
    built = build_model("cifar:resnet20")
    graph = ModelGraph(built.model, built.example_input())
    with pytest.raises(DeployKitError, match="names group 'no.such.layer', which the model does not have"):
        ck.restore_plan(graph, ckpt)


def test_checkpoint_state_schema_lists_prune_state_fields():
    from deploykit.train.job import PruneState

    assert set(ck.StateDoc.model_fields) == {f.name for f in dataclasses.fields(PruneState)}
