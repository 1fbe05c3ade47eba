"""Fine-tuning, evaluation and BatchNorm recalibration."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from deploykit.data import ImageDataset, batches
from deploykit.zoo.base import Preprocess


@dataclass
class TrainConfig:
    """Fine-tuning settings.

    Attributes:
        epochs: passes over the training set (fractions allowed: 0.5 = half an epoch).
        lr: peak learning rate of the cosine schedule.
        optimizer: ``sgd`` (momentum 0.9, nesterov) or ``adamw``.
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


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW; no weight decay on BatchNorm and biases."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)


def cosine_lr(step: int, total: int, peak: float) -> float:
    """Cosine decay from ``peak`` to zero over ``total`` steps."""
    return 0.5 * peak * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


def train(
    model: nn.Module,
    ds: ImageDataset,
    pre: Preprocess,
    cfg: TrainConfig,
    teacher: nn.Module | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
) -> float:
    """Fine-tune ``model`` in place; returns the last batch's loss.

    Args:
        teacher: when given, the loss is :func:`kd_loss` against its logits.
        on_step: called as ``on_step(step, total_steps, loss)`` after each step.
    """
    steps_per_epoch = math.ceil(len(ds) / cfg.batch_size)
    total = max(1, round(cfg.epochs * steps_per_epoch))
    opt = make_optimizer(model, cfg)
    if teacher is not None:
        teacher.eval()
    model.train()
    step, loss_value, epoch = 0, float("nan"), 0
    while step < total:
        for x, y in batches(ds, pre, cfg.batch_size, shuffle=True, seed=cfg.seed + epoch, augment=cfg.augment):
            if step >= total:
                break
            for g in opt.param_groups:
                g["lr"] = cosine_lr(step, total, cfg.lr)
            out = model(x)
            if teacher is not None:
                with torch.no_grad():
                    t_out = teacher(x)
                loss = kd_loss(out, t_out, y, cfg.kd_alpha, cfg.kd_temperature)
            else:
                loss = F.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            loss_value = loss.item()
            if on_step:
                on_step(step, total, loss_value)
        epoch += 1
    model.eval()
    return loss_value


@torch.no_grad()
def evaluate(model: nn.Module, ds: ImageDataset, pre: Preprocess, batch_size: int = 256) -> float:
    """Top-1 accuracy in percent."""
    model.eval()
    correct = 0
    for x, y in batches(ds, pre, batch_size):
        correct += int((model(x).argmax(1) == y).sum())
    return 100.0 * correct / max(len(ds), 1)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, ds: ImageDataset, pre: Preprocess, num_batches: int = 20, batch_size: int = 128) -> None:
    """Re-estimate BatchNorm running statistics (cumulative average) on a few batches."""
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
        model(x)
    for m, (mom, tr) in zip(bns, saved):
        m.momentum = mom
        m.train(tr)
    model.eval()
