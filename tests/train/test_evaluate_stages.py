"""Skipping the stage evaluations (an API setting for long benchmarks) changes only the report."""

import numpy as np
import torch
from safetensors.torch import load_file

import deploykit


def test_skipping_stage_evaluations_trains_the_same_model(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 96), ("test", 32)):
        np.savez(tmp_path / f"cifar10_{split}_lossless_000.npz", x=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                 y=rng.integers(0, 10, n))
    reports, weights = [], []
    for stages in (True, False):
        out = tmp_path / f"out-{stages}"
        reports.append(deploykit.compress(model="cifar:resnet20", out=str(out), target_macs=0.8, criterion="l1",
                                          data=f"cifar10:{tmp_path}", finetune_epochs=1, batch_size=32, bn_batches=2,
                                          kd=True, evaluate_stages=stages))
        weights.append(load_file(str(out / "model.safetensors")))
    assert reports[0]["top1_after_pruning"] is not None and reports[1]["top1_after_pruning"] is None
    # Same process, same machine: evaluation consumes no randomness and leaves the model as it found it.
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert reports[0]["pruned"]["top1"] == reports[1]["pruned"]["top1"]
