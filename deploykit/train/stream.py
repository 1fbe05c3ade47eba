"""Training batches addressed by iteration number: deterministic, shardable, resumable.

Batch ``i`` is a pure function of ``(seed, i)``: the epoch's permutation and each
global batch's augmentation draws come from generators seeded by those numbers, not
from a generator that advances as batches are drawn. So a resumed run continues
with exactly the batches it would have seen, and N processes that each take every
N-th sample of a global batch see, together, exactly the batch one process sees,
augmentation included.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from deploykit.data import ImageDataset
from deploykit.errors import DeployKitError
from deploykit.zoo.base import Preprocess


def _seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, pad: int) -> torch.Tensor:
    """Zero-pad by ``pad``, crop at offsets ``(dy, dx)`` per sample, flip where ``flip``."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    out = torch.empty_like(x)
    for i in range(n):
        crop = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


class BatchStream:
    """Global batches of ``batch_size`` samples (the last partial batch of an epoch is dropped).

    Args:
        ds: the training images.
        pre: turns uint8 images into the model's input.
        batch_size: the global batch size (summed over processes).
        seed: fixes the order and the augmentation of every batch.
        augment: CIFAR-style random crop (4-pixel zero padding) and horizontal flip.
        shard: ``(rank, world)``: this process takes samples ``rank, rank + world, ...`` of each batch.
    """

    def __init__(
        self,
        ds: ImageDataset,
        pre: Preprocess,
        batch_size: int,
        seed: int = 0,
        augment: bool = False,
        shard: tuple[int, int] = (0, 1),
        pad: int = 4,
    ) -> None:
        rank, world = shard
        if batch_size % world:
            raise DeployKitError(f"--batch-size {batch_size} must be a multiple of the number of processes ({world})")
        if len(ds) < batch_size:
            raise DeployKitError(f"--batch-size {batch_size} is larger than the training set ({len(ds)} images)")
        self.ds, self.pre, self.batch_size, self.seed, self.augment = ds, pre, batch_size, seed, augment
        self.rank, self.world, self.pad = rank, world, pad
        self.steps_per_epoch = len(ds) // batch_size
        self._order: tuple[int, torch.Tensor] | None = None

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        if self._order is None or self._order[0] != epoch:
            g = torch.Generator().manual_seed(_seed(self.seed, epoch, 0))
            self._order = (epoch, torch.randperm(len(self.ds), generator=g))
        return self._order[1]

    def indices(self, iteration: int) -> torch.Tensor:
        """Dataset indices of this process's share of global batch ``iteration``."""
        epoch, step = divmod(iteration, self.steps_per_epoch)
        idx = self._epoch_order(epoch)[step * self.batch_size : (step + 1) * self.batch_size]
        return idx[self.rank :: self.world]

    def batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's ``(x, y)`` of global batch ``iteration``."""
        idx = self.indices(iteration).numpy()
        x, y = self.ds.batch(idx, self.pre)
        if self.augment:
            epoch, step = divmod(iteration, self.steps_per_epoch)
            g = torch.Generator().manual_seed(_seed(self.seed, epoch, step + 1))
            b, span = self.batch_size, 2 * self.pad + 1
            # Draw for the whole global batch, then take this process's share.
            dy = torch.randint(0, span, (b,), generator=g)[self.rank :: self.world]
            dx = torch.randint(0, span, (b,), generator=g)[self.rank :: self.world]
            flip = (torch.rand(b, generator=g) < 0.5)[self.rank :: self.world]
            x = crop_flip(x, dy, dx, flip, self.pad)
        return x, y
