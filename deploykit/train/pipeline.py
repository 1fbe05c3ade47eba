"""The compress pipeline: validate, build, prune on a schedule, fine-tune, evaluate, write the artifact.

Every name is checked and every input loaded before any slow work, so bad input
costs nothing and writes nothing. Under torchrun every process runs this; they
train on shares of each global batch, agree on every removal (rank 0's choice is
broadcast) and only rank 0 writes checkpoints and the artifact.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from deploykit.atomic import check_out_dir
from deploykit.bench.attach import LATENCY_TARGET, attach_latency, ladders_for, latency_report
from deploykit.bench.speedup import speedup_warning
from deploykit.bench.predictor import LatencyModel
from deploykit.bench.verify import LatencyCheck
from deploykit.compression import CompressConfig
from deploykit.select.targets import TARGETS
from deploykit.data import ImageDataset, batches, load_dataset, model_classes
from deploykit.data.splits import with_split
from deploykit.errors import DeployKitError
from deploykit.graph import verify
from deploykit.graph.costs import CostModel, Costs, measure
from deploykit.graph.groups import ModelGraph
from deploykit.importance import ScoringContext, get_criterion
from deploykit.importance.base import Batch, Importance
from deploykit.progress import Reporter
from deploykit.prune.artifact import save_artifact
from deploykit.prune.plan import make_plan
from deploykit.prune.reconstruct import RECOVERIES, Recovery
from deploykit.select import NORMALIZERS, SelectConfig, Target, select_global
from deploykit.train import dcff  # noqa: F401  (registers the dcff schedule)
from deploykit.train import detection  # noqa: F401  (registers the detection task)
from deploykit.train.checkpoint import (Checkpoint, CheckpointDir, check_plan, optimizer_from_flat, optimizer_to_flat,
                                        restore_plan)
from deploykit.train.distributed import Dist, process_group, synchronized_batchnorm
from deploykit.train.job import Job, PruneState, Stateful
from deploykit.train.loop import OPTIMIZERS, TASKS, Task, Trainer, TrainConfig, recalibrate_bn
from deploykit.train.schedules import SCHEDULES, Schedule
from deploykit.train.search import resolve_schedule
from deploykit.train.stream import BatchStream
from deploykit.zoo import build_model, check_input, parse_shape

CHECKPOINTS = "checkpoints"
# Settings a resumed run may change: they do not alter what is computed.
RESUMABLE_CHANGES = {"resume", "force", "checkpoint_every", "eval_data", "evaluate_base", "evaluate_stages", "device"}
# Settings naming files, compared as the files they name: --out run and --out /abs/run are one directory.
PATH_SETTINGS = ("out", "model", "weights", "lut", "teacher", "teacher_weights")


@dataclass
class _Resolved:
    criterion: Importance
    normalize: str
    schedule: Schedule
    targets: list[Target]
    schedule_name: str
    recover: Recovery
    recover_name: str


def _resolve(cfg: CompressConfig) -> _Resolved:
    """Look every name up in its registry (unknown names list the valid ones)."""
    criterion = get_criterion(cfg.criterion)
    normalize = cfg.normalize or criterion.default_normalize
    NORMALIZERS.get(normalize)
    OPTIMIZERS.get(cfg.optimizer)
    recover_name = cfg.recover or getattr(criterion, "default_recover", "none")
    recover = RECOVERIES.get(recover_name)
    schedule_name = resolve_schedule(criterion, cfg.criterion, cfg.schedule, recover_name)
    schedule = SCHEDULES.get(schedule_name)()
    targets = [Target(TARGETS.get(name).cost, ratio) for name, ratio in cfg.targets.items()]
    if criterion.requires_data and not cfg.data:
        raise DeployKitError(f"criterion {cfg.criterion!r} needs calibration data: pass --data SPEC")
    if cfg.finetune_epochs > 0 and not cfg.data:
        raise DeployKitError("--finetune-epochs needs --data")
    if schedule.trains_while_pruning and (not cfg.data or cfg.finetune_epochs <= 0):
        raise DeployKitError(f"--schedule {cfg.schedule} prunes while fine-tuning: pass --data and --finetune-epochs")
    if (cfg.teacher or cfg.teacher_weights) and not cfg.kd:
        raise DeployKitError("--teacher distils: pass --kd with it")
    if cfg.teacher_weights and not cfg.teacher:
        raise DeployKitError("--teacher-weights needs --teacher MODEL")
    if recover_name != "none" and not cfg.data:
        raise DeployKitError(f"--recover {recover_name} needs calibration data: pass --data SPEC")
    return _Resolved(criterion, normalize, schedule, targets, schedule_name, recover, recover_name)


def _check_output(cfg: CompressConfig, out: Path) -> None:
    """A non-empty ``--out`` needs ``--force``; with ``--resume`` our own checkpoints may be there."""
    if cfg.resume and out.is_dir() and not cfg.force:
        other = [p.name for p in out.iterdir() if p.name != CHECKPOINTS]
        if other:
            raise DeployKitError(f"output directory {out} holds more than checkpoints ({other[0]}); pass --force to replace it")
        return
    check_out_dir(out, cfg.force)


def fingerprint(cfg: CompressConfig) -> dict[str, Any]:
    """The settings that determine a run's result (what a resumed run must share)."""
    settings = cfg.model_dump(exclude=RESUMABLE_CHANGES)
    for key in PATH_SETTINGS:
        if settings.get(key) and Path(settings[key]).exists():
            settings[key] = str(Path(settings[key]).resolve())
    if settings.get("data"):  # cifar10:DIR:train: the same DIR, relative or absolute, is the same data
        settings["data"] = ":".join(str(Path(p).resolve()) if p and Path(p).exists() else p
                                    for p in settings["data"].split(":"))
    return settings


def _check_resumable(ckpt: Checkpoint, cfg: CompressConfig) -> None:
    old, new = ckpt.meta.get("config", {}), fingerprint(cfg)
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            raise DeployKitError(
                f"--resume: the checkpoint in {ckpt.path.parent} was written with {key}={old.get(key)!r}, not "
                f"{new.get(key)!r}; rerun with the same options, or without --resume (and --force) to start over"
            )


@dataclass
class _Data:
    train: ImageDataset | None
    evals: dict[str, ImageDataset]  # the primary test split first

    @classmethod
    def load(cls, cfg: CompressConfig) -> _Data:
        train = load_dataset(with_split(cfg.data, "train")) if cfg.data else None
        specs = ([with_split(cfg.data, "test")] if cfg.data else []) + [s for s in cfg.eval_data]
        return cls(train, {s: load_dataset(s) for s in dict.fromkeys(specs)})

    @property
    def primary(self) -> str | None:
        return next(iter(self.evals), None)


def _rounding(unrounded: dict[str, str], graph: ModelGraph, round_to: int | str) -> dict[str, Any]:
    """The report's ``rounding``: groups (and their layers) that could not keep a multiple of ``--round-to``, and why."""
    detail = {gid: {"reason": why, "layers": list(graph.get(gid).layers)} for gid, why in unrounded.items()}
    layers = {lay for d in detail.values() for lay in d["layers"]}  # a layer may sit in two groups (in and out)
    return {"round_to": round_to, "unrounded": detail, "unrounded_layers": len(layers)}


def _reachable(cost_model: CostModel, graph: ModelGraph, sel_cfg: SelectConfig) -> dict[str, str]:
    """Raise when no selection can meet the targets; returns groups left unrounded."""
    zeros = {g.id: torch.zeros(g.channels) for g in graph.prunable()}
    sel = select_global(cost_model, zeros, sel_cfg)
    if not sel.met:
        best = sel.predicted.ratio(cost_model.base) if sel.predicted else {}
        unmet = [t for t in sel_cfg.targets if not t.met(sel.predicted, cost_model.base)] if sel.predicted else sel_cfg.targets
        t = unmet[0]
        raise DeployKitError(
            f"cannot reach {t.ratio} of the {t.kind}: at most {best.get(t.kind, 1.0):.3f} with round-to "
            f"{sel_cfg.round_to} and max-ratio {sel_cfg.max_ratio}; raise the target or --max-ratio"
        )
    return sel.unrounded


def _teacher(cfg: CompressConfig, shape: tuple[int, ...] | None, student: torch.nn.Module,
             example: torch.Tensor) -> torch.nn.Module:
    """The model ``--kd`` distils from: ``--teacher`` when given, else the unpruned model."""
    if cfg.teacher is None:
        return build_model(cfg.model, weights=cfg.weights, input_shape=shape).model.to(cfg.device)
    teacher = build_model(cfg.teacher, weights=cfg.teacher_weights, input_shape=shape).model
    widths = [model_classes(m, example) for m in (teacher, student)]
    if widths[0] != widths[1]:
        raise DeployKitError(f"--teacher {cfg.teacher} has {widths[0]} outputs, the model {widths[1]}: "
                             "distillation needs the same classes")
    return teacher.to(cfg.device)


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


def _only_rank0(model: torch.nn.Module) -> float:
    raise AssertionError("only rank 0 times the model; the others receive its measurement")


def _costs(c: Costs, top1: float | None) -> dict[str, Any]:
    d: dict[str, Any] = c.to_dict()
    if top1 is not None:
        d["top1"] = round(top1, 2)
    return d


def run(cfg: CompressConfig, reporter: Reporter) -> dict[str, Any]:
    """Run one compress job; see :func:`deploykit.compression.compress`."""
    start = time.perf_counter()
    rs = _resolve(cfg)
    out = Path(cfg.out)
    _check_output(cfg, out)
    data = _Data.load(cfg)
    with process_group(cfg.device) as d:
        return _Run(cfg, rs, data, d, reporter if d.main else Reporter(), out).execute(start)


class _Run:
    """One compress job inside its process group."""

    def __init__(self, cfg: CompressConfig, rs: _Resolved, data: _Data, d: Dist, rep: Reporter, out: Path) -> None:
        self.cfg, self.rs, self.data, self.d, self.rep, self.out = cfg, rs, data, d, rep, out
        self.ckpts = CheckpointDir(out / CHECKPOINTS)
        self.fresh_checkpoints = True
        self.task: Task = TASKS.get("classification")  # set from the model in execute()

    # -- evaluation ------------------------------------------------------------------------------
    def _evaluate_all(self, model: torch.nn.Module, pre) -> dict[str, float]:
        return {spec: round(self.task.evaluate(model, ds, pre, dist=self.d, device=self.cfg.device), 2)
                for spec, ds in self.data.evals.items()}

    def execute(self, start: float) -> dict[str, Any]:
        cfg, d, rep = self.cfg, self.d, self.rep
        torch.manual_seed(cfg.seed)
        shape = parse_shape(cfg.input_shape) if cfg.input_shape else None
        built = build_model(cfg.model, weights=cfg.weights, input_shape=shape)
        check_input(built)
        model, pre = built.model, built.preprocess
        # Classifiers train on labels with cross-entropy; detectors on boxes with their own loss (train/detection.py).
        self.task = TASKS.get(built.task)
        self.task.check_compatible(built, [self.data.train, *self.data.evals.values()])
        example = built.example_input()
        graph = ModelGraph(built.traced, example, ignore=cfg.ignore)
        # Input checks before any work: a checkpoint of other settings or another model, a teacher of other classes.
        ckpt = self.ckpts.latest() if cfg.resume else None
        if ckpt is not None:
            _check_resumable(ckpt, cfg)
            check_plan(graph, ckpt)
        train_ds = self.data.train
        steps_per_epoch = len(train_ds) // cfg.batch_size if train_ds is not None else 0
        total = max(1, round(cfg.finetune_epochs * steps_per_epoch)) if cfg.finetune_epochs > 0 else 0
        teacher = _teacher(cfg, shape, model, example) if cfg.kd and total > 0 else None
        # Every group checks itself on a copy (pruned == masked); the ones that fail are left whole.
        with rep.task("checking every group: pruned equals masked", None):
            verdict = verify.probe(built.traced, example, graph, cfg.ignore, seed=cfg.seed)
        if verdict.failed:
            rep.log(f"{len(verdict.failed)} group(s) left whole, not followed (why: report.json 'verification')")
        unpruned = copy.deepcopy(built.traced).cpu().eval()
        cost_model = CostModel(graph)
        # --normalize latency, --target-latency, --round-to auto: predictions from the latency table.
        latency = attach_latency(cost_model, cfg.model, normalize=self.rs.normalize, targets=cfg.targets,
                                 round_to=cfg.round_to, lut=cfg.lut, ignore=cfg.ignore, reporter=rep)
        base_costs = cost_model.base
        round_to, ladders = ladders_for(latency, cfg.round_to)
        sel_cfg = SelectConfig(self.rs.targets, self.rs.normalize, round_to, cfg.max_ratio, ladders=ladders)
        rounding = _rounding(_reachable(cost_model, graph, sel_cfg), graph, cfg.round_to)

        for path, why in self.ckpts.skipped if cfg.resume else []:
            rep.log(f"not resuming from {path}: {why}")
        if ckpt is not None:
            restore_plan(graph, ckpt)  # rebuild the architecture the checkpoint was taken at
            rep.log(f"resuming from {ckpt.path} (iteration {ckpt.iteration})")
        model.to(cfg.device)
        base_top1 = (ckpt.meta.get("base_top1") if ckpt is not None else None) or (
            self._evaluate_all(model, pre) if cfg.evaluate_base else {})

        trainer = stream = None
        if total > 0:
            tcfg = TrainConfig(epochs=cfg.finetune_epochs, lr=cfg.lr, batch_size=cfg.batch_size, weight_decay=cfg.weight_decay,
                               optimizer=cfg.optimizer, seed=cfg.seed, augment=pre.size[0] >= 32 and self.task.augment,
                               kd_alpha=cfg.kd_alpha, kd_temperature=cfg.kd_temperature)
            trainer = Trainer(model, tcfg, teacher, d, cfg.device, task=self.task)
            stream = BatchStream(train_ds, pre, cfg.batch_size, seed=cfg.seed, augment=tcfg.augment, shard=d.shard)

        criterion = self.rs.criterion
        state = PruneState()
        if ckpt is not None:
            self._restore(ckpt, model, trainer, criterion)
            state = PruneState.from_dict(ckpt.meta["state"])
            self.fresh_checkpoints = False

        job = Job(model=model, graph=graph, cost_model=cost_model, criterion=criterion,
                  scoring=ScoringContext(model, graph, loss_fn=self.task.scoring_loss(model), all_reduce=d.all_reduce),
                  select=sel_cfg,
                  comparable=criterion.comparable, dist=d, trainer=trainer, stream=stream, total=total, lr=cfg.lr,
                  interval=cfg.interval, channels_per_step=cfg.channels_per_step, prune_within=cfg.prune_within,
                  state=state)
        job.calibration = lambda: self._calibration(train_ds, pre)

        def reference() -> torch.nn.Module:
            """The unpruned model as the graph traced it: what a recovery step fits against."""
            b = build_model(cfg.model, weights=cfg.weights, input_shape=shape)
            return getattr(b, "traced", b.model)

        if latency is not None and state.pruned_at is None:
            job.latency_check, job.latency_rounds = self._latency_check(latency, reference, graph), cfg.latency_checks
        # The recovery step (e.g. least-squares reconstruction) runs between removal and evaluation.
        job.on_pruned = lambda j: (self.rs.recover(j.graph, reference, j.calibration, j.dist.all_reduce), self._on_pruned(j, pre))
        job.save = lambda: self._save(job, base_top1) if cfg.checkpoint_every else None
        # No bar when there is nothing to train (one-shot without fine-tuning).
        bar = rep.task("fine-tuning", total) if total else Reporter().task("fine-tuning", None)
        with bar as task, synchronized_batchnorm(model, d):
            if state.iteration:
                task.advance(state.iteration)
            job.on_step = lambda j, loss: self._on_step(j, loss, task)
            self.rs.schedule.run(job)

        model.eval()
        model.cpu()
        final = self._evaluate_all(model, pre)
        pruned_costs = measure(built.traced, example)
        report = self._report(job, base_costs, pruned_costs, base_top1, final, rounding, ckpt, total)
        if latency is not None:
            report["latency"] = {**latency_report(latency, cost_model), "checks": job.state.latency_checks}
        warning = speedup_warning(report, ((full, len(g.kept)) for g, full in zip(graph.groups, graph.full_widths)))
        report["warnings"] = [warning] if warning else []
        # The plan verifies itself before it is written: its removal, on the unpruned model, equals masking.
        removal = {g.id: set(range(full)) - set(g.kept) for g, full in zip(graph.groups, graph.full_widths)
                   if len(g.kept) < full}
        final_check = verify.check(unpruned, example, cfg.ignore, removal) if removal else verify.Verdict()
        if final_check.failed:  # the probe passed these groups: a bug, never a silently wrong artifact
            gid, why = next(iter(final_check.failed.items()))
            raise RuntimeError(f"the plan does not verify: group {gid} {why}")
        report["verification"] = {**verdict.to_dict(), "plan_verified": bool(removal),
                                  "seconds": round(verdict.seconds + final_check.seconds, 2)}
        report["seconds"] = round(time.perf_counter() - start, 2)
        if d.main:
            plan = make_plan(built, graph, criterion=cfg.criterion, ignore=cfg.ignore)
            owned = self.out.is_dir() and {p.name for p in self.out.iterdir()} <= {CHECKPOINTS}
            save_artifact(self.out, model, plan, report, force=cfg.force or owned)
        d.barrier()
        return report

    def _latency_check(self, latency: LatencyModel, reference: Callable[[], torch.nn.Module],
                       graph: ModelGraph) -> Callable[[torch.nn.Module], float] | None:
        """The timing of the pruned model against the unpruned one, when a latency target asks for it
        and this machine can run the table's backend; rank 0 times, the others get its answer."""
        cfg = self.cfg
        if LATENCY_TARGET not in cfg.targets or cfg.latency_checks == 0:
            return None
        check = LatencyCheck.for_table(latency.lut.key, reference(), graph.example_input) if self.d.main else None
        if not self.d.broadcast(check is not None):
            k = latency.lut.key
            self.rep.log(f"the latency table was measured with {k.backend} on {k.device}, which this machine cannot "
                         "run: --target-latency is met on the table's prediction, not measured")
            return None
        if check is None:
            return _only_rank0

        def timed(model: torch.nn.Module) -> float:
            with self.rep.task("timing the pruned model against the base", check.runs) as task:
                ratio = check.ratio(model, task)
            self.rep.log(f"measured latency {ratio:.3f} of the base (target {cfg.targets[LATENCY_TARGET]})")
            return ratio

        return timed

    # -- schedule callbacks ----------------------------------------------------------------------
    def _calibration(self, ds: ImageDataset | None, pre) -> Iterator[Batch]:
        assert ds is not None
        cfg = self.cfg
        n = min(cfg.calib_batches, -(-len(ds) // cfg.batch_size))
        with self.rep.task("calibrating", n) as task:
            for x, y in batches(ds, pre, cfg.batch_size, shuffle=True, seed=cfg.seed, limit=n, shard=self.d.shard):
                yield x.to(cfg.device), y.to(cfg.device)
                task.advance()

    def _on_pruned(self, job: Job, pre) -> None:
        stages = self.cfg.evaluate_stages
        if stages:
            job.state.stages["after_pruning"] = self._evaluate_all(job.model, pre)
        if self.data.train is not None and self.cfg.bn_batches > 0:
            recalibrate_bn(job.model, self.data.train, pre, num_batches=self.cfg.bn_batches, device=self.cfg.device)
            if stages:
                job.state.stages["after_bn_recalibration"] = self._evaluate_all(job.model, pre)
        r = job.ratios()
        self.rep.log(f"targets met at iteration {job.state.iteration}: {job.removed_channels} channels removed, "
                     f"MACs {r['macs']:.3f}, params {r['params']:.3f}, memory {r['activation_bytes']:.3f} of the base")

    def _on_step(self, job: Job, loss: float, task) -> None:
        r = job.ratios()
        task.advance(1, f"it {job.state.iteration} loss {loss:.3f} MACs {r['macs']:.3f} mem {r['activation_bytes']:.3f} "
                        f"removed {job.removed_channels}")
        k = self.cfg.checkpoint_every
        if k and job.state.iteration % k == 0:
            job.save()

    # -- checkpoints -----------------------------------------------------------------------------
    def _save(self, job: Job, base_top1: dict[str, float]) -> None:
        """Write a checkpoint of ``job`` (collective: every process must call it)."""
        crit_state: dict[str, torch.Tensor] = {}
        if isinstance(job.criterion, Stateful):
            # Sum the accumulators over processes; rank 0 stores the sum and resumes with it.
            local = job.criterion.state_dict()
            keys = sorted(local)
            flat = torch.cat([local[k].reshape(-1).double() for k in keys]) if keys else torch.zeros(0, dtype=torch.float64)
            flat = self.d.all_reduce(flat.to(self.cfg.device)).cpu()
            crit_state = dict(zip(keys, flat.split([local[k].numel() for k in keys])))
        rng = self.d.gather(_rng_states())
        if not self.d.main:
            return
        if self.fresh_checkpoints:  # an earlier run's checkpoints in a --force'd directory must not mix in
            self.ckpts.clear()
            self.fresh_checkpoints = False
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
            "world_size": self.d.world,
        }
        if job.trainer is not None:
            tensors["optimizer"], meta["optimizer"] = optimizer_to_flat(job.trainer.state_dict())
        self.ckpts.save(job.state.iteration, tensors, meta)

    def _restore(self, ckpt: Checkpoint, model: torch.nn.Module, trainer: Trainer | None, criterion: Importance) -> None:
        from deploykit.zoo.weights import load_into

        load_into(model, {k: v.to(self.cfg.device) for k, v in ckpt.tensors["model"].items()}, str(ckpt.path))
        if trainer is not None and "optimizer" in ckpt.meta:
            trainer.load_state_dict(optimizer_from_flat(ckpt.tensors.get("optimizer", {}), ckpt.meta["optimizer"]))
        if isinstance(criterion, Stateful):
            saved = ckpt.tensors.get("criterion", {})
            criterion.load_state_dict(saved if self.d.main else {k: torch.zeros_like(v) for k, v in saved.items()})
        states = ckpt.tensors.get("rng", {})
        if ckpt.meta.get("world_size") == self.d.world:  # else each process keeps its fresh seed
            _set_rng_states({k.partition(".")[2]: v for k, v in states.items() if k.partition(".")[0] == str(self.d.rank)})

    # -- report ----------------------------------------------------------------------------------
    def _report(self, job: Job, base: Costs, pruned: Costs, base_top1: dict[str, float], final: dict[str, float],
                rounding: dict[str, Any], ckpt: Checkpoint | None, total: int) -> dict[str, Any]:
        cfg, primary = self.cfg, self.data.primary
        stages = job.state.stages
        evals = {spec: {"base": base_top1.get(spec), "after_pruning": stages.get("after_pruning", {}).get(spec),
                        "after_bn_recalibration": stages.get("after_bn_recalibration", {}).get(spec), "final": final[spec]}
                 for spec in self.data.evals}
        prim = evals.get(primary, {}) if primary else {}
        return {
            "model": cfg.model,
            "metric": self.task.metric,  # what "top1" and "eval" hold: top-1 (classifiers) or mAP@0.5 (detectors)
            "criterion": cfg.criterion,
            "normalize": self.rs.normalize,
            "schedule": self.rs.schedule_name,
            "recover": self.rs.recover_name,
            "targets": dict(cfg.targets),
            "base": _costs(base, prim.get("base")),
            "pruned": _costs(pruned, prim.get("final")),
            "ratios": {k: round(v, 4) for k, v in pruned.ratio(base).items()},
            "top1_after_pruning": prim.get("after_pruning"),
            "top1_after_bn_recalibration": prim.get("after_bn_recalibration"),
            "eval": evals,
            "data": cfg.data,
            "finetune_epochs": cfg.finetune_epochs,
            "iterations": {"budget": total, "pruning": job.state.pruned_at, "done": job.state.iteration},
            "training": {"batch_size": cfg.batch_size, "lr": cfg.lr, "optimizer": cfg.optimizer, "kd": cfg.kd,
                         "teacher": cfg.teacher, "kd_alpha": cfg.kd_alpha, "kd_temperature": cfg.kd_temperature, "seed": cfg.seed},
            "interval": cfg.interval if self.rs.schedule.trains_while_pruning else None,
            "channels_per_step": cfg.channels_per_step if self.rs.schedule.trains_while_pruning else None,
            "prune_within": cfg.prune_within if self.rs.schedule.trains_while_pruning else None,
            "groups_pruned": len({r[1] for r in job.state.removals}),
            "channels_removed": job.removed_channels,
            "removals": job.state.removals,
            "rounding": rounding,
            "world_size": self.d.world,
            "resumed_from": ckpt.iteration if ckpt is not None else None,
        }
