"""Checkpoints: round trip without pickle, atomic, damaged ones skipped, old ones pruned."""

import json

import pytest
import torch
from torch import nn

from deploykit.train.checkpoint import CheckpointDir, optimizer_from_flat, optimizer_to_flat


def _tensors(v):
    return {"model": {"w": torch.full((3, 2), float(v)), "b": torch.arange(4)}, "rng": {"0": torch.get_rng_state()}}


def test_round_trip_and_newest_first(tmp_path):
    cd = CheckpointDir(tmp_path / "ck", keep=2)
    for it in (2, 4, 6):
        cd.save(it, _tensors(it), {"state": {"iteration": it}, "plan": [{"id": "a", "kept": [0, 2]}]})
    names = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert names == ["step-00000004", "step-00000006"]  # keep=2, no temporary leftovers
    ck = cd.latest()
    assert ck.iteration == 6 and ck.meta["state"] == {"iteration": 6} and ck.meta["plan"][0]["kept"] == [0, 2]
    assert torch.equal(ck.tensors["model"]["w"], torch.full((3, 2), 6.0))
    assert torch.equal(ck.tensors["rng"]["0"], torch.get_rng_state())


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_meta", "bad_json"])
def test_a_damaged_newest_checkpoint_is_skipped(tmp_path, damage):
    cd = CheckpointDir(tmp_path, keep=3)
    cd.save(1, _tensors(1), {})
    newest = cd.save(2, _tensors(2), {})
    t, m = newest / "tensors.safetensors", newest / "meta.json"
    if damage == "truncate":
        t.write_bytes(t.read_bytes()[:100])
    elif damage == "flip":
        b = bytearray(t.read_bytes())
        b[-1] ^= 0xFF
        t.write_bytes(bytes(b))
    elif damage == "no_meta":
        m.unlink()
    else:
        m.write_text(m.read_text()[:20])
    assert cd.latest().iteration == 1


def test_leftover_temporary_directory_is_ignored(tmp_path):
    cd = CheckpointDir(tmp_path)
    cd.save(3, _tensors(3), {})
    (tmp_path / ".tmp-dead").mkdir()
    (tmp_path / ".tmp-dead" / "meta.json").write_text(json.dumps({"iteration": 99}))
    (tmp_path / "step-00000099").mkdir()  # a directory that never got its files
    assert cd.latest().iteration == 3
    assert CheckpointDir(tmp_path / "none").latest() is None


@pytest.mark.parametrize("make", [lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
                                  lambda p: torch.optim.AdamW(p, lr=0.01, betas=(0.8, 0.95))], ids=["sgd", "adamw"])
def test_optimizer_state_round_trips_through_safetensors_and_json(tmp_path, make):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    opt = make(net.parameters())
    for _ in range(2):
        net(torch.randn(5, 4)).sum().backward()
        opt.step()
    tensors, doc = optimizer_to_flat(opt.state_dict())
    cd = CheckpointDir(tmp_path)
    cd.save(0, {"optimizer": tensors}, {"optimizer": doc})
    ck = cd.latest()
    opt2 = make(net.parameters())
    opt2.load_state_dict(optimizer_from_flat(ck.tensors["optimizer"], ck.meta["optimizer"]))
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == [dict(g, betas=tuple(g["betas"])) if "betas" in g else g for g in b["param_groups"]]
    for i, st in a["state"].items():
        for k, v in st.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(b["state"][i][k])), (i, k)


def test_checkpoints_get_the_umask_modes(tmp_path):
    # A checkpoint lives inside the artifact: a service account reading the artifact reads it too.
    import os

    old = os.umask(0o022)
    try:
        path = CheckpointDir(tmp_path / "ck").save(2, _tensors(2), {"state": {}, "plan": []})
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in [path, *path.iterdir()]}
    assert modes == {path.name: 0o755, **{p.name: 0o644 for p in path.iterdir()}}
