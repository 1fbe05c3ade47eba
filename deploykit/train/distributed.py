"""torch.distributed for ``torchrun``: process group setup, collectives, DDP, synchronized BatchNorm.

One process per device; ``torchrun --nproc-per-node N -m deploykit compress ...`` sets
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT`` and every process
runs the same job on its share of each global batch. Outside torchrun everything here
degrades to single-process no-ops, so the job code has no ``if distributed`` branches.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from deploykit.errors import DeployKitError


@dataclass(frozen=True)
class Dist:
    """This process's place in the job.

    Attributes:
        rank: global rank (0 writes every output).
        world: number of processes.
        local_rank: rank on this node (picks the CUDA device).
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes outputs and shows progress."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether there is more than one process."""
        return self.world > 1

    @property
    def shard(self) -> tuple[int, int]:
        """``(rank, world)``, as :func:`deploykit.data.batches` takes it."""
        return self.rank, self.world

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over all processes, in place; returns it."""
        if self.enabled:
            dist.all_reduce(t)
        return t

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every process (picklable objects the job itself made)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order, on every process."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        """Wait for every process."""
        if self.enabled:
            dist.barrier()


def env_world() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@contextlib.contextmanager
def process_group(device: str = "cpu", timeout_s: float = 1800.0) -> Iterator[Dist]:
    """Join the torchrun job described by the environment (gloo on CPU, NCCL on CUDA).

    Yields a single-process :class:`Dist` outside torchrun. A group that was already
    initialized by the caller is used as is and left alone on exit.
    """
    world = env_world()
    if world <= 1:
        yield Dist()
        return
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_available():
        raise DeployKitError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    created = not dist.is_initialized()
    if created:
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    try:
        yield Dist(dist.get_rank(), dist.get_world_size(), local)
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def wrap_ddp(model: nn.Module, d: Dist, device: str) -> nn.Module:
    """``model`` under DistributedDataParallel when there are several processes.

    DDP registers hooks on the parameters it is built with, so it must be rebuilt
    whenever channels are removed (parameters are replaced by smaller ones).
    """
    if not d.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [torch.device(device).index] if device.startswith("cuda") else None
    # The construction broadcasts rank 0's parameters and buffers: a cheap guard that all ranks agree.
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


class _SyncBatchNormMixin:
    """Training-mode BatchNorm whose batch statistics cover the global batch.

    torch.nn.SyncBatchNorm runs on accelerators only; this version uses the
    autograd-aware all-reduce of ``torch.distributed.nn`` and so also runs on gloo/CPU.
    With it, N processes compute what one process computes on the whole global
    batch (up to float rounding), which is what makes a multi-process run remove
    the same channels as a single-process one.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if not self.training or not dist.is_initialized() or dist.get_world_size() == 1:
            return super().forward(x)  # type: ignore[misc]
        from torch.distributed.nn.functional import all_reduce

        dims = [0, *range(2, x.ndim)]
        shape = [1, -1] + [1] * (x.ndim - 2)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        n = all_reduce(count)
        # Two passes (mean, then squared deviations) keep float32 variance accurate.
        mean = all_reduce(x.sum(dims)) / n
        var = all_reduce((x - mean.view(shape)).pow(2).sum(dims)) / n
        if self.track_running_stats:  # type: ignore[attr-defined]
            with torch.no_grad():
                self.num_batches_tracked += 1  # type: ignore[attr-defined]
                mom = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)  # type: ignore[attr-defined]
                unbiased = var * (n / (n - 1).clamp_min(1))
                self.running_mean.mul_(1 - mom).add_(mean.detach(), alpha=mom)  # type: ignore[attr-defined]
                self.running_var.mul_(1 - mom).add_(unbiased.detach(), alpha=mom)  # type: ignore[attr-defined]
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)  # type: ignore[attr-defined]
        if self.affine:  # type: ignore[attr-defined]
            y = y * self.weight.view(shape) + self.bias.view(shape)  # type: ignore[attr-defined]
        return y


_SYNC_CLASSES: dict[type, type] = {}


def _sync_class(cls: type) -> type:
    if cls not in _SYNC_CLASSES:
        _SYNC_CLASSES[cls] = type(f"Sync{cls.__name__}", (_SyncBatchNormMixin, cls), {})
    return _SYNC_CLASSES[cls]


@contextlib.contextmanager
def synchronized_batchnorm(model: nn.Module, d: Dist) -> Iterator[None]:
    """Within the block, every BatchNorm of ``model`` normalizes over the global batch.

    The modules keep their identity (only their class is swapped), so the dependency
    graph, the optimizer and the state dict still refer to them; the original class
    is restored on exit. A no-op on one process.
    """
    if not d.enabled:
        yield
        return
    swapped = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, (_SyncBatchNormMixin, nn.SyncBatchNorm)):
            swapped.append((m, type(m)))
            m.__class__ = _sync_class(type(m))
    try:
        yield
    finally:
        for m, cls in swapped:
            m.__class__ = cls
