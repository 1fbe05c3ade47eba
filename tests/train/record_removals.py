"""``python tests/train/record_removals.py OUT.jsonl ARGS...``: run ``deploykit ARGS...`` (also under
torchrun) and record, on rank 0, what every removal was decided on.

Each line of ``OUT.jsonl`` is one call of :meth:`Job.remove`: the iteration, the all-reduced
scores of every prunable group, the removal made, and the decision's margin: the relative
score gap between a channel removed and the best candidate kept, as the selection ranks them
(score per unit of saved cost, costs recomputed after each pick). A margin of ``m`` means no
perturbation of the scores by a relative ``m / 2`` or less can change the decision.

A test helper, not a test: it patches :class:`deploykit.train.job.Job` in this process only.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import torch

from deploykit.graph.costs import CostModel
from deploykit.select.global_rank import NORMALIZERS, SelectConfig, _min_keep
from deploykit.train import job as job_module


def pick_margins(cost_model: CostModel, scores: dict[str, torch.Tensor], cfg: SelectConfig, comparable: bool,
                 picks: int, beyond_targets: bool) -> tuple[dict[str, list[int]], list[float]] | None:
    """Replay a selection of up to ``picks`` single channels (fewer once the targets are met, unless
    ``beyond_targets``) and give each pick's relative gap to the runner-up.

    Only for what the DDP test runs (one channel per chunk, no ladders); None otherwise.

    Returns:
        ``(removal, gaps)``: the channels the replay removes (original indices by group id; the
        caller checks they are those the job removed) and, per pick, ``(runner-up - best) /
        runner-up`` over every channel that could have gone instead.
    """
    groups = cost_model.groups
    if cfg.round_to != 1 or cfg.ladders or any(g.atoms and any(len(a) != 1 for a in g.atoms) for g in groups):
        return None
    norm = NORMALIZERS.get(cfg.normalize)
    w = cost_model.widths()
    left: dict[int, dict[int, float]] = {}
    for gi, g in enumerate(groups):
        if g.id not in scores:
            continue
        s = scores[g.id].double()
        if not comparable:
            s = s / s.abs().mean().clamp_min(1e-12)
        left[gi] = {c: float(v) for c, v in zip(g.kept, s)}
    removal: dict[str, list[int]] = {}
    gaps: list[float] = []
    for _ in range(picks):
        if not beyond_targets and all(t.met(cost_model.predict(w), cost_model.base) for t in cfg.targets):
            break
        cands: list[tuple[float, int, int]] = []
        for gi, chans in left.items():
            if w[gi] - 1 < _min_keep(cost_model.full[gi], cfg):
                continue
            cost = norm(cost_model.saving(gi, 1, w)) if cfg.normalize != "none" else 1.0
            if cost > 0:
                cands += [(v / cost, gi, c) for c, v in chans.items()]
        if len(cands) < 2:
            break
        cands.sort()
        (best, gi, c), runner = cands[0], cands[1][0]
        gaps.append((runner - best) / runner if runner > 0 else 0.0)
        removal.setdefault(groups[gi].id, []).append(c)
        del left[gi][c]
        w[gi] -= 1
    return {gid: sorted(cs) for gid, cs in removal.items()}, gaps


def main(out: str, argv: list[str]) -> int:
    records: list[dict[str, Any]] = []
    remove = job_module.Job.remove

    def recording_remove(self: job_module.Job, scores: dict[str, torch.Tensor], max_chunks: int | None = None,
                         beyond_targets: bool = False) -> int:
        before = len(self.state.removals)
        picks = max_chunks if max_chunks is not None else 0
        replay = (pick_margins(self.cost_model, scores, self.select, self.comparable, picks, beyond_targets)
                  if picks else None)
        n = remove(self, scores, max_chunks=max_chunks, beyond_targets=beyond_targets)
        if self.dist.main:
            made = {gid: idxs for _, gid, idxs in self.state.removals[before:]}
            records.append({
                "iteration": self.state.iteration,
                "scores": {gid: s.double().tolist() for gid, s in scores.items()},
                "removal": made,
                "replayed": replay[0] if replay else None,
                "gaps": replay[1] if replay else None,
            })
        return n

    job_module.Job.remove = recording_remove  # type: ignore[method-assign]
    from deploykit.cli.main import main as cli

    code = cli(argv)
    if records:
        with open(out, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
