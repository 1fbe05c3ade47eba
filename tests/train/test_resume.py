"""SIGKILL in the middle of a progressive run, resume, finish: the same pruned network as an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

import deploykit
from deploykit.train.checkpoint import CheckpointDir

ARGS = ["compress", "digits:demo", "--data", "digits", "--target-macs", "0.85", "--schedule", "progressive",
        "--interval", "1", "--finetune-epochs", "0.5", "--batch-size", "32", "--bn-batches", "2", "--seed", "3",
        "--round-to", "1"]  # one channel per removal: the kill lands mid-pruning


def _env():
    # One thread: identical arithmetic in every run (and no oversubscription on small machines).
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _cli(*args):
    return [sys.executable, "-m", "deploykit", *ARGS, *map(str, args)]


def _wait_for_checkpoint(proc, root: Path, at_least: int, timeout: float = 600.0) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        steps = [int(p.name[5:]) for p in root.glob("step-*") if p.name[5:].isdigit()] if root.is_dir() else []
        if steps and max(steps) >= at_least:
            return
        assert proc.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


def test_killed_progressive_run_resumes_to_the_same_architecture(tmp_path, digits_model):
    killed, ref = tmp_path / "killed", tmp_path / "ref"
    proc = subprocess.Popen(_cli("--out", killed, "--checkpoint-every", "2"), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_checkpoint(proc, killed / "checkpoints", at_least=6)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # Nothing but checkpoints was written, and the newest complete one is mid-pruning.
    assert sorted(p.name for p in killed.iterdir()) == ["checkpoints"]
    ck = CheckpointDir(killed / "checkpoints").latest()
    assert ck is not None and ck.iteration >= 6 and ck.meta["state"]["pruned_at"] is None
    assert ck.meta["plan"], "channels were already removed before the kill"

    r = subprocess.run(_cli("--out", killed, "--checkpoint-every", "2", "--resume", "--json", tmp_path / "resumed.json"),
                       env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming from" in r.stderr
    assert "loss" in r.stderr and "MACs" in r.stderr  # the progress bar's status: iteration, loss, MACs, memory, removed
    r = subprocess.run(_cli("--out", ref, "--json", tmp_path / "ref.json"), env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]

    resumed, full = json.loads((tmp_path / "resumed.json").read_text()), json.loads((tmp_path / "ref.json").read_text())
    assert resumed["resumed_from"] >= ck.iteration and full["resumed_from"] is None
    assert resumed["removals"] == full["removals"] and resumed["iterations"] == full["iterations"]
    plan_a, plan_b = (json.loads((d / "plan.json").read_text()) for d in (killed, ref))
    assert plan_a["groups"] == plan_b["groups"] and plan_a["groups"]
    assert resumed["pruned"]["macs"] <= 0.85 * resumed["base"]["macs"]
    # The finished artifact is complete and loads; the checkpoints are gone with the run.
    assert sorted(p.name for p in killed.iterdir()) == ["model.safetensors", "plan.json", "report.json"]
    a, b = deploykit.load(str(killed)), deploykit.load(str(ref))
    x = a.example_input(2)
    assert torch.allclose(a.model(x), b.model(x), atol=1e-5)


# -- resuming: one directory however it is spelled; checkpoint metadata checked before use -------------------------

SMALL = ["compress", "cifar:resnet20", "--target-macs", "0.9", "--criterion", "l1", "--finetune-epochs", "1",
         "--batch-size", "16", "--checkpoint-every", "1", "--bn-batches", "1", "--seed", "0"]


def _interrupted(root: Path, monkeypatch) -> tuple[list[str], Path]:
    """A small run (CIFAR ResNet-20, 32 random images, 2 iterations) stopped right after its first
    checkpoint, its --out given as an absolute path; the arguments to rerun it, and --out."""
    from deploykit.cli.main import main
    from deploykit.train import checkpoint
    from tests.trust import cifar_shards

    args = [*SMALL, "--data", f"cifar10:{cifar_shards(root / 'data', n=32)}"]
    out = (root / "run").resolve()
    save = checkpoint.CheckpointDir.save

    def save_then_stop(self, *a, **k):  # Ctrl-C right after the first checkpoint is on disk
        save(self, *a, **k)
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(checkpoint.CheckpointDir, "save", save_then_stop)
        assert main([*args, "--out", str(out)]) == 130
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints"]
    return args, out


def test_resume_accepts_the_same_directory_given_as_a_relative_path(tmp_path, monkeypatch, capsys):
    from deploykit.cli.main import main

    args, out = _interrupted(tmp_path, monkeypatch)
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    data = args.index("--data") + 1
    assert args[data].startswith(f"cifar10:{tmp_path}")
    args[data] = args[data].replace(f"cifar10:{tmp_path}/", "cifar10:")  # the same data directory, relative
    assert main([*args, "--out", "run", "--resume"]) == 0, capsys.readouterr().err
    assert "resuming from" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "plan.json", "report.json"]


def test_resume_from_a_checkpoint_naming_an_unknown_group_is_one_line(tmp_path, monkeypatch, capsys):
    from deploykit.cli.main import main
    from deploykit.train import checkpoint
    from tests.cli.test_bad_input import run_bad

    args, out = _interrupted(tmp_path, monkeypatch)
    [step] = (out / "checkpoints").glob("step-*")
    meta = json.loads((step / "meta.json").read_text())
    meta["plan"][0]["id"] = "no.such.layer"
    meta["sha256"]["meta.json"] = checkpoint._meta_digest(meta)  # edited and re-hashed: the schema passes it
    (step / "meta.json").write_text(json.dumps(meta))
    capsys.readouterr()
    line = run_bad([*args, "--out", out, "--resume"], capsys)
    assert "names group 'no.such.layer', which the model does not have" in line
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints"]

    # Edited without re-hashing: detected, passed over with the reason logged, and the run starts over.
    meta["plan"][0]["id"] = "layer1.0.conv1"
    (step / "meta.json").write_text(json.dumps(meta).replace("layer1.0.conv1", "layer1.1.conv1", 1))
    assert main([*args, "--out", str(out), "--resume"]) == 0
    log = "".join(capsys.readouterr().err.split())  # the progress display wraps lines anywhere
    assert f"notresumingfrom{step}" in log and "doesnotmatchitsrecordedhash" in log
    assert "resumingfrom" not in log.replace("notresumingfrom", "")
