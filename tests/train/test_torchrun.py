"""torchrun with 2 CPU processes (gloo) removes the same channels as one process on the same global batches."""

import json
import os
import subprocess
import sys

import pytest
import torch.distributed as dist

ARGS = ["compress", "digits:demo", "--data", "digits", "--target-macs", "0.9", "--schedule", "progressive",
        "--interval", "2", "--channels-per-step", "2", "--finetune-epochs", "0.5", "--batch-size", "32",
        "--bn-batches", "2", "--kd", "--seed", "1", "--round-to", "1"]  # many small removals to compare


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo is needed")
def test_two_processes_remove_the_channels_one_process_removes(tmp_path, digits_model):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    one, two = tmp_path / "one", tmp_path / "two"
    r = subprocess.run([sys.executable, "-m", "deploykit", *ARGS, "--out", str(one), "--json", str(tmp_path / "one.json")],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "deploykit", *ARGS, "--out", str(two), "--json", str(tmp_path / "two.json")],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    a, b = json.loads((tmp_path / "one.json").read_text()), json.loads((tmp_path / "two.json").read_text())
    assert a["world_size"] == 1 and b["world_size"] == 2
    assert len(a["removals"]) >= 5  # several progressive removal steps, each decided on all-reduced Fisher sums
    assert b["removals"] == a["removals"]
    assert b["iterations"] == a["iterations"]
    assert json.loads((one / "plan.json").read_text())["groups"] == json.loads((two / "plan.json").read_text())["groups"]
    # Rank 0 alone wrote: one artifact, one report, one table on stdout.
    assert sorted(p.name for p in two.iterdir()) == ["model.safetensors", "plan.json", "report.json"]
    assert r.stdout.count("wrote ") == 1
