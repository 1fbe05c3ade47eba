"""The one-shot and progressive schedules, driven on a tiny network."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deploykit.data import ImageDataset
from deploykit.graph.costs import CostModel
from deploykit.graph.groups import ModelGraph
from deploykit.importance import ScoringContext, get_criterion
from deploykit.select import SelectConfig, Target
from deploykit.train.distributed import Dist
from deploykit.train.job import Job, Pace
from deploykit.train.loop import Trainer, TrainConfig, cosine_lr, kd_loss
from deploykit.train.schedules import SCHEDULES
from deploykit.train.stream import BatchStream
from deploykit.zoo.base import Preprocess
from tests.models import TwoRes, randomize_bn

PRE = Preprocess(size=(16, 16), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def _job(schedule, interval=3, per_step=1, total=40, target=0.8, within=None):
    torch.manual_seed(0)
    model = randomize_bn(TwoRes())
    graph = ModelGraph(model, torch.randn(1, 3, 16, 16))
    rng = np.random.default_rng(0)
    ds = ImageDataset(rng.integers(0, 256, (64, 16, 16, 3), dtype=np.uint8), rng.integers(0, 5, 64), list("abcde"), "t")
    crit = get_criterion("fisher")
    trainer = Trainer(model, TrainConfig(lr=0.05))
    lrs, adds, resets = [], [], []
    step, add, reset = trainer.step, crit.add, crit.reset
    trainer.step = lambda x, y, lr, observe=None: (lrs.append(lr), step(x, y, lr, observe))[1]
    crit.add = lambda g: (adds.append(job.state.iteration), add(g))[1]
    crit.reset = lambda: (resets.append(job.state.iteration), reset())[1]
    job = Job(model=model, graph=graph, cost_model=CostModel(graph), criterion=crit, scoring=ScoringContext(model, graph),
              select=SelectConfig([Target("macs", target)]), comparable=True, dist=Dist(), trainer=trainer,
              stream=BatchStream(ds, PRE, 16, seed=0),
              pace=Pace(total=total, lr=0.05, interval=interval, channels_per_step=per_step, prune_within=within),
              calibration=lambda: [ds_batch(ds)])
    job.spy = {"lrs": lrs, "adds": adds, "resets": resets}
    return job


def ds_batch(ds):
    x = PRE.apply(torch.from_numpy(ds.images[:16]))
    return x, torch.from_numpy(ds.labels[:16])


def test_progressive_removes_one_channel_every_interval_until_the_target_then_fine_tunes():
    job = _job("progressive", interval=3)
    SCHEDULES.get("progressive")().run(job)
    st = job.state
    assert job.targets_met() and st.pruned_at is not None and 0 < st.pruned_at <= job.pace.total
    its = [r[0] for r in st.removals]
    assert its == list(range(3, st.pruned_at + 1, 3))  # one removal every 3 iterations, none after the target
    assert all(len(r[2]) == 1 for r in st.removals)  # the single lowest-scoring channel each time
    # Accumulators reset after every removal: each removal saw exactly the 3 training steps before it.
    assert job.spy["resets"] == its
    assert job.spy["adds"] == list(range(st.pruned_at))  # observed while pruning only, one add per step
    lrs = job.spy["lrs"]
    assert len(lrs) == job.pace.total == st.iteration
    assert lrs[: st.pruned_at] == [0.05] * st.pruned_at
    rest = job.pace.total - st.pruned_at
    assert lrs[st.pruned_at:] == [cosine_lr(i, rest, 0.05) for i in range(rest)]
    assert sum(len(r[2]) for r in st.removals) == job.removed_channels > 0


def test_progressive_chunks_per_step():
    job = _job("progressive", interval=2, per_step=3)
    SCHEDULES.get("progressive")().run(job)
    per_it = {}
    for it, _, idxs in job.state.removals:
        per_it[it] = per_it.get(it, 0) + len(idxs)
    assert all(it % 2 == 0 for it in per_it)
    assert all(n == 3 for n in list(per_it.values())[:-1])  # the last step may stop early at the target
    assert job.targets_met()


def test_prune_within_sizes_the_removals_to_finish_in_time():
    slow = _job("progressive", interval=2, total=40, target=0.6)
    SCHEDULES.get("progressive")().run(slow)
    assert slow.state.pruned_at > 10  # one channel every 2 iterations is not enough for 0.6 of the MACs in 10
    job = _job("progressive", interval=2, total=40, target=0.6, within=0.25)
    SCHEDULES.get("progressive")().run(job)
    assert job.targets_met() and job.state.pruned_at <= 10
    steps = sorted({r[0] for r in job.state.removals})
    assert steps == list(range(2, job.state.pruned_at + 1, 2))  # still every interval, just larger removals
    sizes = [sum(len(r[2]) for r in job.state.removals if r[0] == it) for it in steps]
    assert max(sizes) > 1


def test_progressive_runs_past_the_budget_to_meet_the_target():
    job = _job("progressive", interval=4, total=6, target=0.7)
    SCHEDULES.get("progressive")().run(job)
    assert job.targets_met() and job.state.pruned_at > 6 and job.state.iteration == job.state.pruned_at


def test_oneshot_prunes_at_iteration_zero_then_cosine():
    job = _job("oneshot", total=5)
    SCHEDULES.get("oneshot")().run(job)
    assert job.state.pruned_at == 0 and {r[0] for r in job.state.removals} == {0}
    assert job.targets_met()
    assert job.spy["lrs"] == [cosine_lr(i, 5, 0.05) for i in range(5)]


def test_kd_loss_formula():
    torch.manual_seed(0)
    s, t, y = torch.randn(4, 5), torch.randn(4, 5), torch.randint(0, 5, (4,))
    T, a = 4.0, 0.3
    p_t = torch.softmax(t / T, 1)
    kl = (p_t * (p_t.log() - torch.log_softmax(s / T, 1))).sum(1).mean()
    want = (1 - a) * F.cross_entropy(s, y) + a * T * T * kl
    assert torch.allclose(kd_loss(s, t, y, a, T), want, atol=1e-6)
    assert torch.allclose(kd_loss(s, t, y, 0.0, T), F.cross_entropy(s, y))


def test_cosine_lr_ends_at_zero():
    assert cosine_lr(0, 10, 0.1) == pytest.approx(0.1)
    assert cosine_lr(5, 10, 0.1) == pytest.approx(0.05)
    assert cosine_lr(10, 10, 0.1) == pytest.approx(0.0)
