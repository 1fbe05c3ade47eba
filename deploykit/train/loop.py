"""Fine-tuning steps (optionally distilled, optionally data-parallel), evaluation, BatchNorm recalibration."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from deploykit.data import ImageDataset, batches, check_compatible, model_classes
from deploykit.errors import DeployKitError
from deploykit.registry import Registry
from deploykit.train.distributed import Dist, wrap_ddp
from deploykit.zoo.base import Preprocess


@dataclass
class TrainConfig:
    """Fine-tuning settings.

    Attributes:
        epochs: passes over the training set (fractions allowed: 0.5 = half an epoch).
        lr: peak learning rate of the cosine schedule.
        optimizer: a name in :data:`OPTIMIZERS` (``sgd``: momentum 0.9, nesterov; ``adamw``).
        kd_alpha, kd_temperature: distillation weight α and temperature T (used with a teacher).
        augment: random crop + flip (CIFAR-style).
    """

    epochs: float = 1.0
    lr: float = 0.01
    batch_size: int = 128
    weight_decay: float = 5e-4
    optimizer: str = "sgd"
    seed: int = 0
    augment: bool = False
    kd_alpha: float = 0.5
    kd_temperature: float = 4.0


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, alpha: float, t: float) -> torch.Tensor:
    """(1−α)·CE + α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T))."""
    ce = F.cross_entropy(student, target)
    kl = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1), reduction="batchmean", log_target=True)
    return (1 - alpha) * ce + alpha * t * t * kl


OptimizerFactory = Callable[[list[dict], float], torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")
OPTIMIZERS.register("sgd", lambda groups, lr: torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True))
OPTIMIZERS.register("adamw", lambda groups, lr: torch.optim.AdamW(groups, lr=lr))


class Task(Protocol):
    """What fine-tuning and evaluation need to know about a kind of model (registry :data:`TASKS`).

    Attributes:
        metric: what :meth:`evaluate` reports (``top1``, ``map50``), in percent.
        augment: whether CIFAR-style crop and flip may be applied to its inputs.
    """

    metric: str
    augment: bool

    def loss(self, model: nn.Module, out: Any, x: torch.Tensor, y: torch.Tensor, teacher: nn.Module | None,
             cfg: TrainConfig) -> torch.Tensor:
        """The training loss of a batch (mean over its samples), distilled when ``teacher`` is given."""
        ...

    def scoring_loss(self, model: nn.Module) -> Callable[[Any, torch.Tensor], torch.Tensor]:
        """The loss data-driven criteria differentiate, summed over a batch's samples."""
        ...

    def evaluate(self, model: nn.Module, ds: Any, pre: Preprocess, batch_size: int = 256, dist: Dist | None = None,
                 device: str = "cpu") -> float:
        """The task's metric on ``ds``, in percent."""
        ...

    def check_compatible(self, built: Any, datasets: list[Any]) -> None:
        """Refuse, in one line, data this model cannot train or be evaluated on."""
        ...


class ClassificationTask:
    """Cross-entropy (or :func:`kd_loss`) on logits; top-1 accuracy."""

    metric = "top1"
    augment = True

    def loss(self, model: nn.Module, out: torch.Tensor, x: torch.Tensor, y: torch.Tensor, teacher: nn.Module | None,
             cfg: TrainConfig) -> torch.Tensor:
        if teacher is None:
            return F.cross_entropy(out, y)
        with torch.no_grad():
            t_out = teacher(x)
        return kd_loss(out, t_out, y, cfg.kd_alpha, cfg.kd_temperature)

    def scoring_loss(self, model: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return lambda out, y: F.cross_entropy(out, y, reduction="sum")

    def evaluate(self, model: nn.Module, ds: ImageDataset, pre: Preprocess, batch_size: int = 256,
                 dist: Dist | None = None, device: str = "cpu") -> float:
        return evaluate(model, ds, pre, batch_size, dist, device)

    def check_compatible(self, built: Any, datasets: list[Any]) -> None:
        for ds in datasets:
            if ds is not None and getattr(ds, "task", "classification") != "classification":
                raise DeployKitError(f"data {ds.spec} holds {ds.task} labels (boxes) but {built.spec} is a classifier; "
                                     "give class-labelled data (cifar10:, imagefolder:, digits)")
        check_compatible(model_classes(built.model, built.example_input()), built.preprocess, *datasets)


TASKS: Registry[Task] = Registry("task")
TASKS.register("classification", ClassificationTask())


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimizer; no weight decay on BatchNorm and biases."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return OPTIMIZERS.get(cfg.optimizer)(groups, cfg.lr)


def cosine_lr(step: int, total: int, peak: float) -> float:
    """Cosine decay from ``peak`` to zero over ``total`` steps."""
    return 0.5 * peak * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


class Trainer:
    """One optimizer step at a time on a model that may shrink between steps.

    Args:
        model: trained in place.
        cfg: optimizer, weight decay, distillation settings.
        teacher: when given, the loss is distilled against its outputs (:func:`kd_loss` for classifiers).
        dist: the process group; gradients are averaged over it (DDP).
        device: where batches are moved.
        task: what the model does (its loss); classification when None.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, teacher: nn.Module | None = None, dist: Dist | None = None,
                 device: str = "cpu", task: Task | None = None) -> None:
        self.model, self.cfg, self.teacher = model, cfg, teacher
        self.task = task or TASKS.get("classification")
        self.dist = dist or Dist()
        self.device = device
        self.optimizer = make_optimizer(model, cfg)
        self._ddp: nn.Module | None = None
        if teacher is not None:
            teacher.eval()

    def model_changed(self) -> None:
        """Call after channels were removed: the DDP wrapper is rebuilt on the next step."""
        self._ddp = None

    def _module(self) -> nn.Module:
        if self._ddp is None:
            self._ddp = wrap_ddp(self.model, self.dist, self.device)
        return self._ddp

    def loss(self, out: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training loss of a batch (mean over its samples)."""
        return self.task.loss(self.model, out, x, y, self.teacher, self.cfg)

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float,
             observe: AbstractContextManager | None = None) -> float:
        """One forward/backward/update at learning rate ``lr``; returns the global mean loss.

        Args:
            observe: a context entered around the forward and backward pass (a criterion
                reading gradients from the training step).
        """
        x, y = x.to(self.device), y.to(self.device)
        self.model.train()
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        with observe if observe is not None else contextlib.nullcontext():
            loss = self.loss(self._module()(x), x, y)
            loss.backward()
        self.optimizer.step()
        value = loss.detach().reshape(1).double()
        return float(self.dist.all_reduce(value)) / self.dist.world

    def state_dict(self) -> dict:
        """The optimizer's state."""
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore the optimizer's state (the model must have the same architecture)."""
        self.optimizer.load_state_dict(state)


def train(
    model: nn.Module,
    ds: ImageDataset,
    pre: Preprocess,
    cfg: TrainConfig,
    teacher: nn.Module | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    task: Task | None = None,
) -> float:
    """Fine-tune ``model`` in place for ``cfg.epochs`` with a cosine schedule; returns the last batch's loss.

    Args:
        teacher: when given, the loss is :func:`kd_loss` against its logits.
        on_step: called as ``on_step(step, total_steps, loss)`` after each step.
        task: what the model does (its loss); classification when None.
    """
    steps_per_epoch = math.ceil(len(ds) / cfg.batch_size)
    total = max(1, round(cfg.epochs * steps_per_epoch))
    trainer = Trainer(model, cfg, teacher, task=task)
    step, loss_value, epoch = 0, float("nan"), 0
    while step < total:
        for x, y in batches(ds, pre, cfg.batch_size, shuffle=True, seed=cfg.seed + epoch, augment=cfg.augment):
            if step >= total:
                break
            loss_value = trainer.step(x, y, cosine_lr(step, total, cfg.lr))
            step += 1
            if on_step:
                on_step(step, total, loss_value)
        epoch += 1
    model.eval()
    return loss_value


@torch.no_grad()
def evaluate(model: nn.Module, ds: ImageDataset, pre: Preprocess, batch_size: int = 256, dist: Dist | None = None,
             device: str = "cpu") -> float:
    """Top-1 accuracy in percent; with several processes each takes a share of the batches."""
    d = dist or Dist()
    model.eval()
    correct = torch.zeros(1, dtype=torch.float64, device=device)  # on the device: NCCL reduces device tensors
    for i, (x, y) in enumerate(batches(ds, pre, batch_size)):
        if i % d.world == d.rank:
            correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
    return 100.0 * float(d.all_reduce(correct)) / max(len(ds), 1)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, ds: ImageDataset, pre: Preprocess, num_batches: int = 20, batch_size: int = 128,
                   device: str = "cpu") -> None:
    """Re-estimate BatchNorm running statistics (cumulative average) on a few batches.

    Every process computes the same statistics from the same batches, so replicas stay identical.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [(m.momentum, m.training) for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    for x, _ in batches(ds, pre, batch_size, shuffle=True, limit=num_batches):
        model(x.to(device))
    for m, (mom, tr) in zip(bns, saved):
        m.momentum = mom
        m.train(tr)
    model.eval()


from deploykit.train import detection  # noqa: E402,F401  (registers the detection task in TASKS)
