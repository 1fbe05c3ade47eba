"""The compress pipeline: validate, build, prune on a schedule, fine-tune, evaluate, write the artifact.

Every name is checked and every input loaded before any slow work, so bad input
costs nothing and writes nothing. Under torchrun every process runs this; they
train on shares of each global batch, agree on every removal (rank 0's choice is
broadcast) and only rank 0 writes checkpoints and the artifact.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from deploykit.bench.latency_check import LatencyCheck
from deploykit.bench.latency_table.cost_model import attach_latency, ladders_for, latency_report
from deploykit.bench.latency_table.predictor import LatencyModel
from deploykit.bench.latency_table.variants import prune_to_widths
from deploykit.bench.speedup_warning import speedup_warning
from deploykit.compress_job.checkpointing import Checkpointer, check_resumable
from deploykit.compress_job.inputs import CHECKPOINTS, Data, Resolved, check_output, reachable, resolve, teacher
from deploykit.compress_job.report import RunSummary, build_report, rounding, verification
from deploykit.compression import CompressConfig
from deploykit.data import batches
from deploykit.graph import verify
from deploykit.graph.costs import CostModel, measure
from deploykit.graph.groups import ModelGraph
from deploykit.importance import ScoringContext
from deploykit.importance.base import Batch
from deploykit.progress import Reporter, Timings
from deploykit.progress import Task as ProgressTask
from deploykit.prune.artifact import save_artifact
from deploykit.prune.plan import make_plan
from deploykit.select import SelectConfig
from deploykit.select.latency_aim import LatencyAim
from deploykit.select.targets import LATENCY_TARGET
from deploykit.train.checkpoint import CheckpointDir, check_plan, restore_plan
from deploykit.train.distributed import Dist, process_group, synchronized_batchnorm
from deploykit.train.job import Job, JobHooks, Pace, PruneState
from deploykit.train.loop import TASKS, Task, TrainConfig, Trainer, recalibrate_bn
from deploykit.train.stream import BatchStream
from deploykit.zoo import build_model, check_input, parse_shape
from deploykit.zoo.base import Preprocess


def run(cfg: CompressConfig, reporter: Reporter) -> dict[str, Any]:
    """Run one compress job; see :func:`deploykit.compression.compress`."""
    start = time.perf_counter()
    rs = resolve(cfg)
    out = Path(cfg.out)
    check_output(cfg, out)
    data = Data.load(cfg)
    with process_group(cfg.device) as d:
        return _Run(cfg, rs, data, d, reporter if d.main else Reporter(), out).execute(start)


class _Run(JobHooks):
    """One compress job inside its process group; it is the schedule's :class:`JobHooks`."""

    def __init__(self, cfg: CompressConfig, rs: Resolved, data: Data, d: Dist, rep: Reporter, out: Path) -> None:
        self.cfg, self.rs, self.data, self.d, self.rep, self.out = cfg, rs, data, d, rep, out
        self.ckpts = CheckpointDir(out / CHECKPOINTS)
        self.checkpointer = Checkpointer(self.ckpts, cfg, d)
        self.task: Task = TASKS.get("classification")  # set from the model in execute()
        self.shape: tuple[int, ...] | None = parse_shape(cfg.input_shape) if cfg.input_shape else None
        self.pre: Preprocess | None = None  # the model's preprocessing, set in execute()
        self.base_top1: dict[str, float] = {}
        self.bar: ProgressTask | None = None  # the fine-tuning progress bar while the schedule runs
        self.timings = Timings()

    # -- evaluation ------------------------------------------------------------------------------
    def _evaluate_all(self, model: torch.nn.Module) -> dict[str, float]:
        return {spec: round(self.task.evaluate(model, ds, self.pre, dist=self.d, device=self.cfg.device), 2)
                for spec, ds in self.data.evals.items()}

    def execute(self, start: float) -> dict[str, Any]:
        """Build, check, prune on the schedule, fine-tune, evaluate and (rank 0) write the artifact."""
        cfg, d, rep = self.cfg, self.d, self.rep
        torch.manual_seed(cfg.seed)
        t = self.timings
        with t.phase("build model"):
            built = build_model(cfg.model, weights=cfg.weights, input_shape=self.shape)
            check_input(built)
        model, self.pre = built.model, built.preprocess
        # Classifiers train on labels with cross-entropy; detectors on boxes with their own loss (train/detection.py).
        self.task = TASKS.get(built.task)
        self.task.check_compatible(built, [self.data.train, *self.data.evals.values()])
        example = built.example_input()
        with t.phase("trace graph"):
            graph = ModelGraph(built.traced, example, ignore=cfg.ignore)
        # Input checks before any work: a checkpoint of other settings or another model, a teacher of other classes.
        ckpt = self.ckpts.latest() if cfg.checkpointing.resume else None
        if ckpt is not None:
            check_resumable(ckpt, cfg)
            check_plan(graph, ckpt)
        train_ds = self.data.train
        steps_per_epoch = len(train_ds) // cfg.training.batch_size if train_ds is not None else 0
        epochs = cfg.training.finetune_epochs
        total = max(1, round(epochs * steps_per_epoch)) if epochs > 0 else 0
        kd_teacher = teacher(cfg, self.shape, model, example) if cfg.training.kd and total > 0 else None
        # Every group checks itself on a copy (pruned == masked); the ones that fail are left whole. The copy of
        # the unpruned model the plan is verified against at the end is the probe's reference too (one copy, not two).
        with rep.task("checking every group: pruned equals masked", None), t.phase("check groups"):
            unpruned = copy.deepcopy(built.traced).cpu().eval().float()
            verdict = verify.probe(unpruned, example, graph, cfg.ignore, seed=cfg.seed, owned=True)
        if verdict.failed:
            rep.log(f"{len(verdict.failed)} group(s) left whole, not followed (why: report.json 'verification')")
        with t.phase("cost model"):
            cost_model = CostModel(graph)
        # --normalize latency, --target-latency, --round-to auto: predictions from the latency table.
        with t.phase("latency table"):
            latency = attach_latency(cost_model, cfg.model, normalize=self.rs.normalize, targets=cfg.selection.targets,
                                     round_to=cfg.selection.round_to, lut=cfg.latency.lut, ignore=cfg.ignore,
                                     reporter=rep)
        base_costs = cost_model.base
        round_to, ladders = ladders_for(latency, cfg.selection.round_to, cost_model)
        sel_cfg = SelectConfig(self.rs.targets, self.rs.normalize, round_to, cfg.selection.max_ratio, ladders=ladders)
        with t.phase("cost model"):
            unrounded = rounding(reachable(cost_model, graph, sel_cfg), graph, cfg.selection.round_to)

        for path, why in self.ckpts.skipped if cfg.checkpointing.resume else []:
            rep.log(f"not resuming from {path}: {why}")
        if ckpt is not None:
            restore_plan(graph, ckpt)  # rebuild the architecture the checkpoint was taken at
            rep.log(f"resuming from {ckpt.path} (iteration {ckpt.iteration})")
        model.to(cfg.device)
        with t.phase("evaluate"):
            self.base_top1 = (ckpt.meta.get("base_top1") if ckpt is not None else None) or (
                self._evaluate_all(model) if cfg.evaluate_base else {})

        trainer = stream = None
        if total > 0:
            tr = cfg.training
            tcfg = TrainConfig(epochs=tr.finetune_epochs, lr=tr.lr, batch_size=tr.batch_size,
                               weight_decay=tr.weight_decay, optimizer=tr.optimizer, seed=cfg.seed,
                               augment=self.pre.size[0] >= 32 and self.task.augment,
                               kd_alpha=tr.kd_alpha, kd_temperature=tr.kd_temperature)
            trainer = Trainer(model, tcfg, kd_teacher, d, cfg.device, task=self.task)
            stream = BatchStream(train_ds, self.pre, tr.batch_size, seed=cfg.seed, augment=tcfg.augment,
                                 shard=d.shard)

        criterion = self.rs.criterion
        state = PruneState()
        if ckpt is not None:
            self.checkpointer.restore(ckpt, model, trainer, criterion)
            state = PruneState.from_dict(ckpt.meta["state"])

        sel = cfg.selection
        job = Job(model=model, graph=graph, cost_model=cost_model, criterion=criterion,
                  scoring=ScoringContext(model, graph, loss_fn=self.task.scoring_loss(model), all_reduce=d.all_reduce),
                  select=sel_cfg, comparable=criterion.comparable, dist=d, trainer=trainer, stream=stream,
                  pace=Pace(total=total, lr=cfg.training.lr, interval=sel.interval,
                            channels_per_step=sel.channels_per_step, prune_within=sel.prune_within), state=state,
                  calibration=self._calibration, hooks=self)
        if latency is not None and state.pruned_at is None:
            job.latency = self._latency_aim(latency, graph)
        # No bar when there is nothing to train (one-shot without fine-tuning).
        bar = rep.task("fine-tuning", total) if total else Reporter().task("fine-tuning", None)
        with bar as self.bar, synchronized_batchnorm(model, d), t.phase("prune and fine-tune"):
            if state.iteration:
                self.bar.advance(state.iteration)
            self.rs.schedule.run(job)

        model.eval()
        model.cpu()
        with t.phase("evaluate"):
            final = self._evaluate_all(model)
        summary = RunSummary(metric=self.task.metric, normalize=self.rs.normalize, schedule=self.rs.schedule_name,
                             recover=self.rs.recover_name, trains_while_pruning=self.rs.schedule.trains_while_pruning,
                             base=base_costs, pruned=measure(built.traced, example), base_top1=self.base_top1,
                             final=final, rounding=unrounded, budget=total, world_size=d.world,
                             resumed_from=ckpt.iteration if ckpt is not None else None)
        report = build_report(cfg, job, summary)
        if latency is not None:
            report["latency"] = {**latency_report(latency, cost_model), "checks": job.state.latency_checks}
        warning = speedup_warning(report, ((full, len(g.kept)) for g, full in zip(graph.groups, graph.full_widths)))
        report["warnings"] = [warning] if warning else []
        # The plan verifies itself before it is written: its removal, on the unpruned model, equals masking.
        with t.phase("verify plan"):
            report["verification"] = verification(unpruned, example, cfg.ignore, graph, verdict)
        report["seconds"] = round(time.perf_counter() - start, 2)
        # Where the time went (loading the data and writing the artifact, which holds this report, are not in it).
        report["timings"] = t.to_dict()
        if d.main:
            plan = make_plan(built, graph, criterion=cfg.selection.criterion, ignore=cfg.ignore)
            owned = self.out.is_dir() and {p.name for p in self.out.iterdir()} <= {CHECKPOINTS}
            save_artifact(self.out, model, plan, report, force=cfg.force or owned)
        d.barrier()
        return report

    def _reference(self) -> torch.nn.Module:
        """The unpruned model as the graph traced it: what a recovery step fits against."""
        b = build_model(self.cfg.model, weights=self.cfg.weights, input_shape=self.shape)
        return getattr(b, "traced", b.model)

    def _latency_aim(self, latency: LatencyModel, graph: ModelGraph) -> LatencyAim | None:
        """Timing of the pruned model against the unpruned one, when a latency target asks for it
        and this machine can run the table's backend; rank 0 times, the others get its answer."""
        cfg = self.cfg
        if LATENCY_TARGET not in cfg.selection.targets or cfg.latency.latency_checks == 0:
            return None
        check = (LatencyCheck.for_table(latency.lut.key, self._reference(), graph.example_input, base_ms=latency.lut.base_ms)
                 if self.d.main else None)
        if not self.d.broadcast(check is not None):
            k = latency.lut.key
            self.rep.log(f"the latency table was measured with {k.backend} on {k.device}, which this machine cannot "
                         "run: --target-latency is met on the table's prediction, not measured")
            return None
        timing = _BroadcastTiming(check, self.d, self.rep, cfg.selection.targets[LATENCY_TARGET])
        return LatencyAim(timing, rounds=cfg.latency.latency_checks,
                          pruned_copy=lambda widths: prune_to_widths(graph.model, graph.example_input, widths, graph.ignore))

    # -- schedule hooks --------------------------------------------------------------------------
    def _calibration(self) -> Iterator[Batch]:
        """Fresh calibration batches (this process's share)."""
        ds, cfg = self.data.train, self.cfg
        assert ds is not None
        n = min(cfg.selection.calib_batches, -(-len(ds) // cfg.training.batch_size))
        with self.rep.task("calibrating", n) as task:
            for x, y in batches(ds, self.pre, cfg.training.batch_size, shuffle=True, seed=cfg.seed, limit=n,
                                shard=self.d.shard):
                yield x.to(cfg.device), y.to(cfg.device)
                task.advance()

    def on_pruned(self, job: Job) -> None:
        """Once the targets are met: the recovery step (e.g. least-squares reconstruction), then
        evaluation and BatchNorm recalibration."""
        self.rs.recover(job.graph, self._reference, job.calibration, job.dist.all_reduce)
        stages = self.cfg.evaluate_stages
        if stages:
            job.state.stages["after_pruning"] = self._evaluate_all(job.model)
        if self.data.train is not None and self.cfg.training.bn_batches > 0:
            recalibrate_bn(job.model, self.data.train, self.pre, num_batches=self.cfg.training.bn_batches,
                           device=self.cfg.device)
            if stages:
                job.state.stages["after_bn_recalibration"] = self._evaluate_all(job.model)
        r = job.ratios()
        self.rep.log(f"targets met at iteration {job.state.iteration}: {job.removed_channels} channels removed, "
                     f"MACs {r['macs']:.3f}, params {r['params']:.3f}, memory {r['activation_bytes']:.3f} of the base")

    def on_step(self, job: Job, loss: float) -> None:
        """After every iteration: advance the bar; write a checkpoint when one is due."""
        r = job.ratios()
        assert self.bar is not None
        self.bar.advance(1, f"it {job.state.iteration} loss {loss:.3f} MACs {r['macs']:.3f} "
                            f"mem {r['activation_bytes']:.3f} removed {job.removed_channels}")
        k = self.cfg.checkpointing.checkpoint_every
        if k and job.state.iteration % k == 0:
            job.save()

    def save(self, job: Job) -> None:
        """A checkpoint now, when checkpointing is on."""
        if self.cfg.checkpointing.checkpoint_every:
            self.checkpointer.save(job, self.base_top1)


class _BroadcastTiming:
    """The measured latency ratio of a model to the base, the same on every process: rank 0 times
    (with a progress bar and a log line), the others receive its measurement."""

    def __init__(self, check: LatencyCheck | None, d: Dist, rep: Reporter, target: float) -> None:
        self.check, self.d, self.rep, self.target = check, d, rep, target

    def __call__(self, model: torch.nn.Module) -> float:
        return float(self.d.broadcast(self._time(model) if self.d.main else None))

    def _time(self, model: torch.nn.Module) -> float:
        assert self.check is not None, "only rank 0 times the model; the others receive its measurement"
        with self.rep.task("timing the pruned model against the base", self.check.runs) as task:
            ratio = self.check.ratio(model, task)
        again = (f"; read {self.check.rereads + 1} times: the base ran more than {self.check.spell:.0%} slower than "
                 "its quietest" if self.check.rereads else "")
        self.rep.log(f"measured latency {ratio:.3f} of the base (target {self.target}{again})")
        return ratio
