"""Training batches are a pure function of (seed, iteration) and shard exactly."""

import numpy as np
import pytest
import torch

from deploykit.data import ImageDataset
from deploykit.errors import DeployKitError
from deploykit.train.stream import BatchStream
from deploykit.zoo.base import Preprocess

PRE = Preprocess(size=(8, 8), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def _ds(n=50):
    rng = np.random.default_rng(0)
    return ImageDataset(rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), np.arange(n) % 7, [str(i) for i in range(7)], "t")


def test_random_access_equals_sequential_and_epochs_reshuffle():
    ds = _ds()
    a = BatchStream(ds, PRE, 16, seed=3, augment=True)
    assert a.steps_per_epoch == 3  # the partial batch is dropped
    seq = [a.batch(i) for i in range(7)]
    b = BatchStream(ds, PRE, 16, seed=3, augment=True)  # a fresh process resuming at iteration 5
    for i in (5, 6, 2):
        x, y = b.batch(i)
        assert torch.equal(x, seq[i][0]) and torch.equal(y, seq[i][1])
    assert not torch.equal(a.indices(0), a.indices(3))  # epoch 1 has another order
    assert len(set(a.indices(0).tolist()) | set(a.indices(1).tolist()) | set(a.indices(2).tolist())) == 48
    c = BatchStream(ds, PRE, 16, seed=4, augment=True)
    assert not torch.equal(c.indices(0), a.indices(0))


def test_shards_together_are_the_global_batch_augmentation_included():
    ds = _ds()
    whole = BatchStream(ds, PRE, 16, seed=1, augment=True)
    parts = [BatchStream(ds, PRE, 16, seed=1, augment=True, shard=(r, 2)) for r in range(2)]
    for it in range(4):
        x, y = whole.batch(it)
        for r, p in enumerate(parts):
            xr, yr = p.batch(it)
            assert torch.equal(xr, x[r::2]) and torch.equal(yr, y[r::2])


def test_augmentation_crops_and_flips():
    ds = _ds()
    plain = BatchStream(ds, PRE, 16, seed=1).batch(0)[0]
    aug = BatchStream(ds, PRE, 16, seed=1, augment=True).batch(0)[0]
    assert plain.shape == aug.shape and not torch.equal(plain, aug)


@pytest.mark.parametrize("bs, shard, msg", [(15, (0, 2), "multiple of the number of processes (2)"),
                                            (64, (0, 1), "larger than the training set (50 images)")])
def test_bad_batch_sizes(bs, shard, msg):
    with pytest.raises(DeployKitError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        BatchStream(_ds(), PRE, bs, shard=shard)
