"""Fuzz the artifact and sidecar loaders with a seeded generator of mutations.

Each case mutates a valid plan.json or sidecar (keys deleted or added, types changed,
indices out of range, unsorted or duplicated, huge and negative numbers, nested junk, deep
nesting, non-UTF-8 bytes, truncation) and loads it. The loader must return a valid result
or raise a DeployKitError with a one-line message: never another exception, and never a
write anywhere (the fuzz directories and the working directory are compared before/after).
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from typing import Any

import pytest

from deploykit.cli.main import main
from deploykit.engine import model_config
from deploykit.errors import DeployKitError
from deploykit.export.sidecar import read_sidecar, sidecar_path
from deploykit.prune.artifact import load_artifact, read_plan
from deploykit.zoo.base import Preprocess
from tests.trust import shared_artifact, shared_onnx, snapshot

PLAN_CASES = 300
SIDECAR_CASES = 200
CLI_CASES = 6
LOADED_CASES = 4  # valid mutated plans rebuilt in full (each traces the model)

JUNK: list[Any] = [None, True, False, 0, -1, 1, 7, 2**31, -(2**63), 10**30, 1e308, -1e-308, 0.5, float("nan"),
                   float("inf"), "", "x", "x" * 5000, "a\nb", "\u202e", "../..", "/etc/passwd", "sys:exit",
                   "evilmod:factory", "cifar:resnet20", [], {}, [None], [[1, 2]], {"a": {"b": [1]}}, [3, 1, 2], [0, 0]]
DEEP = "\u0000DEEP\u0000"  # replaced by 100000 nested lists in the serialized text


def _nodes(doc: Any, path: str = "", out: dict[str, list[tuple[Any, Any]]] | None = None) -> dict[str, list[tuple[Any, Any]]]:
    """Every (container, key) pair of a JSON tree, by the shape of its path (``groups.*.kept.*``)."""
    out = {} if out is None else out
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    for k, v in items:
        where = f"{path}.{k if isinstance(doc, dict) else '*'}"
        out.setdefault(where, []).append((doc, k))
        _nodes(v, where, out)
    return out


def _mutate_tree(doc: Any, rng: random.Random) -> None:
    """One structural mutation of ``doc`` in place, at a place of a uniformly chosen kind
    (else the thousands of kept indices would take nearly every mutation)."""
    nodes = _nodes(doc)
    parent, key = rng.choice(nodes[rng.choice(sorted(nodes))])
    value = parent[key]
    op = rng.randrange(20)
    if op == 0 and isinstance(parent, dict):
        del parent[key]
    elif op == 1 and isinstance(parent, dict):
        parent[rng.choice(["extra", "__class__", "groups2", "x" * 100])] = rng.choice(JUNK)
    elif op == 2 and isinstance(value, list) and value:
        rng.choice([value.reverse, lambda: rng.shuffle(value), lambda: value.append(value[0]), value.clear,
                    lambda: value.insert(0, value[-1])])()
    elif op == 3 and isinstance(value, int) and not isinstance(value, bool):
        parent[key] = rng.choice([-value, value + 1, value - 1, 0, value * 10**6, float(value), str(value), 10**400])
    elif op == 4 and isinstance(value, float):
        parent[key] = rng.choice([0.0, -value, value * 1e300, float("nan"), str(value)])
    elif op == 5 and isinstance(value, str):
        parent[key] = rng.choice(["", value * 500, value + "\n", value[::-1], "é" + value, ":" + value])
    elif op == 6:
        parent[key] = DEEP
    elif op < 9 and isinstance(parent, dict):  # a neighbour's value: right kind of JSON, wrong meaning
        parent[key] = json.loads(json.dumps(parent[rng.choice(sorted(parent, key=str))]))
    else:
        parent[key] = rng.choice(JUNK)


def _serialize(doc: Any, rng: random.Random) -> bytes:
    """``doc`` as JSON, then (sometimes) damaged as bytes."""
    text = json.dumps(doc).replace(json.dumps(DEEP), "[" * 100000 + "]" * 100000)
    data = text.encode()
    op = rng.randrange(12)
    if op == 0:
        return data[: rng.randrange(len(data))]  # truncated
    if op == 1:
        i = rng.randrange(len(data))
        return data[:i] + rng.choice([b"\xff", b"\xc3\x28", b"\x00", b"\xed\xa0\x80"]) + data[i:]  # not UTF-8 / NUL
    if op == 2:
        i = rng.randrange(len(data))
        return data[:i] + bytes([rng.randrange(256)]) + data[i + 1:]  # one byte flipped
    return data


def _cases(valid: dict[str, Any], n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        doc = json.loads(json.dumps(valid))
        for _ in range(rng.choice([1, 1, 2, 3])):
            if not _nodes(doc):
                break
            _mutate_tree(doc, rng)
        out.append(_serialize(doc, rng))
    return out


def _check(call: Callable[[], Any]) -> Any:
    """The result of ``call``, or None when it raised a one-line DeployKitError; anything else fails the test."""
    try:
        return call()
    except DeployKitError as e:
        msg = str(e)
        assert msg and "\n" not in msg and len(msg) < 1200, msg
        return None


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> dict[str, Any]:
    """A real artifact and its ONNX export: the documents every case starts from."""
    art, onnx = shared_artifact(tmp_path_factory), shared_onnx(tmp_path_factory)
    return {"artifact": art, "onnx": onnx, "plan": json.loads((art / "plan.json").read_text()),
            "sidecar": json.loads(sidecar_path(onnx).read_text())}


@pytest.fixture()
def isolated(tmp_path, monkeypatch):
    """An empty working directory: nothing may appear in it."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield
    assert list(cwd.iterdir()) == []


def test_fuzzed_plans_load_or_fail_in_one_line(valid, tmp_path, isolated):
    art = tmp_path / "art"
    shutil.copytree(valid["artifact"], art)
    loaded = 0
    for i, data in enumerate(_cases(valid["plan"], PLAN_CASES, seed=11)):
        (art / "plan.json").write_bytes(data)
        before = snapshot(tmp_path)
        plan = _check(lambda: read_plan(art))
        if plan is not None:  # valid: what the loader promises of it holds
            assert all(g["kept"] == sorted(set(g["kept"])) and g["kept"][-1] < g["channels"] for g in plan["groups"])
            assert min(Preprocess.from_dict(plan["preprocess"]).std) > 0
            if loaded < LOADED_CASES:
                loaded += 1
                _check(lambda: load_artifact(art))
        _check(lambda: model_config(art))
        assert snapshot(tmp_path) == before, f"case {i} wrote something"


def test_fuzzed_sidecars_load_or_fail_in_one_line(valid, tmp_path, isolated):
    onnx = tmp_path / "m.onnx"
    shutil.copy(valid["onnx"], onnx)
    for i, data in enumerate(_cases(valid["sidecar"], SIDECAR_CASES, seed=12)):
        sidecar_path(onnx).write_bytes(data)
        before = snapshot(tmp_path)
        side = _check(lambda: read_sidecar(onnx))
        config = _check(lambda: model_config(onnx))
        if side is not None:
            assert Preprocess.from_dict(side["preprocess"]).size[0] <= 16384
        if config is not None and config.get("labels") is not None:
            assert len(config["labels"]) == 10  # the model's output width
        assert snapshot(tmp_path) == before, f"case {i} wrote something"


def test_a_few_fuzzed_plans_through_the_cli(valid, tmp_path, isolated, capsys):
    art = tmp_path / "art"
    shutil.copytree(valid["artifact"], art)
    for data in _cases(valid["plan"], CLI_CASES, seed=13):
        (art / "plan.json").write_bytes(data)
        before = snapshot(tmp_path)
        code = main(["inspect", str(art)])
        err = capsys.readouterr().err
        assert code in (0, 2) and "Traceback" not in err
        assert code == 0 or len(err.strip().splitlines()) == 1, err
        assert snapshot(tmp_path) == before
