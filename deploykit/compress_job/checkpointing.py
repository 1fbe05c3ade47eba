"""A compress run's checkpoints: what goes into one, what a resumed run must share with it, and restoring it.

Saving is collective (criterion accumulators are summed and random states gathered
over processes); only rank 0 writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from deploykit.compression import CompressConfig
from deploykit.errors import DeployKitError
from deploykit.importance.base import Importance
from deploykit.train.checkpoint import Checkpoint, CheckpointDir, optimizer_from_flat, optimizer_to_flat
from deploykit.train.distributed import Dist
from deploykit.train.job import Job, Stateful
from deploykit.train.loop import Trainer

# Settings a resumed run may change: they do not alter what is computed.
RESUMABLE_CHANGES = {"resume", "force", "checkpoint_every", "eval_data", "evaluate_base", "evaluate_stages", "device"}
# Settings naming files, compared as the files they name: --out run and --out /abs/run are one directory.
PATH_SETTINGS = ("out", "model", "weights", "lut", "teacher", "teacher_weights")


def fingerprint(cfg: CompressConfig) -> dict[str, Any]:
    """The settings that determine a run's result (what a resumed run must share)."""
    # By flat name, as before settings were grouped: checkpoints written then still compare key by key.
    settings = {k: v for k, v in cfg.flat().items() if k not in RESUMABLE_CHANGES}
    for key in PATH_SETTINGS:
        if settings.get(key) and Path(settings[key]).exists():
            settings[key] = str(Path(settings[key]).resolve())
    if settings.get("data"):  # cifar10:DIR:train: the same DIR, relative or absolute, is the same data
        settings["data"] = ":".join(str(Path(p).resolve()) if p and Path(p).exists() else p
                                    for p in settings["data"].split(":"))
    return settings


def check_resumable(ckpt: Checkpoint, cfg: CompressConfig) -> None:
    """Refuse to resume from a checkpoint written with other settings (one line naming the first)."""
    old, new = ckpt.meta.get("config", {}), fingerprint(cfg)
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            raise DeployKitError(
                f"--resume: the checkpoint in {ckpt.path.parent} was written with {key}={old.get(key)!r}, not "
                f"{new.get(key)!r}; rerun with the same options, or without --resume (and --force) to start over"
            )


def _rng_states() -> dict[str, torch.Tensor]:
    """This process's random generator states (CPU, and CUDA when used)."""
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def _set_rng_states(states: dict[str, torch.Tensor]) -> None:
    if "cpu" in states:
        torch.set_rng_state(states["cpu"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


class Checkpointer:
    """Writes and restores one run's checkpoints in ``DIR/checkpoints``."""

    def __init__(self, ckpts: CheckpointDir, cfg: CompressConfig, dist: Dist) -> None:
        self.ckpts, self.cfg, self.dist = ckpts, cfg, dist
        # An earlier run's checkpoints in a --force'd directory must not mix in: cleared on the first save.
        self.fresh = True

    def save(self, job: Job, base_top1: dict[str, float]) -> None:
        """Write a checkpoint of ``job`` (collective: every process must call it)."""
        crit_state: dict[str, torch.Tensor] = {}
        if isinstance(job.criterion, Stateful):
            # Sum the accumulators over processes; rank 0 stores the sum and resumes with it.
            local = job.criterion.state_dict()
            keys = sorted(local)
            flat = torch.cat([local[k].reshape(-1).double() for k in keys]) if keys else torch.zeros(0, dtype=torch.float64)
            flat = self.dist.all_reduce(flat.to(self.cfg.device)).cpu()
            crit_state = dict(zip(keys, flat.split([local[k].numel() for k in keys])))
        rng = self.dist.gather(_rng_states())
        if not self.dist.main:
            return
        if self.fresh:
            self.ckpts.clear()
            self.fresh = False
        tensors: dict[str, dict[str, torch.Tensor]] = {
            "model": dict(job.model.state_dict()),
            "criterion": crit_state,
            "rng": {f"{r}.{kind}": state for r, states in enumerate(rng) for kind, state in states.items()},
        }
        meta: dict[str, Any] = {
            "config": fingerprint(self.cfg),
            "state": job.state.to_dict(),
            "plan": [{"id": g.id, "kept": list(g.kept)} for g, full in zip(job.graph.groups, job.graph.full_widths)
                     if len(g.kept) < full],
            "base_top1": base_top1,
            "world_size": self.dist.world,
        }
        if job.trainer is not None:
            tensors["optimizer"], meta["optimizer"] = optimizer_to_flat(job.trainer.state_dict())
        self.ckpts.save(job.state.iteration, tensors, meta)

    def restore(self, ckpt: Checkpoint, model: torch.nn.Module, trainer: Trainer | None, criterion: Importance) -> None:
        """Load ``ckpt``'s weights, optimizer, criterion statistics and (same world size) random states."""
        from deploykit.zoo.weights import load_into

        load_into(model, {k: v.to(self.cfg.device) for k, v in ckpt.tensors["model"].items()}, str(ckpt.path))
        if trainer is not None and "optimizer" in ckpt.meta:
            trainer.load_state_dict(optimizer_from_flat(ckpt.tensors.get("optimizer", {}), ckpt.meta["optimizer"]))
        if isinstance(criterion, Stateful):
            saved = ckpt.tensors.get("criterion", {})
            criterion.load_state_dict(saved if self.dist.main else {k: torch.zeros_like(v) for k, v in saved.items()})
        states = ckpt.tensors.get("rng", {})
        if ckpt.meta.get("world_size") == self.dist.world:  # else each process keeps its fresh seed
            rank = str(self.dist.rank)
            _set_rng_states({k.partition(".")[2]: v for k, v in states.items() if k.partition(".")[0] == rank})
        self.fresh = False
