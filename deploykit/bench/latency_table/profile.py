"""Build a model's latency table: scan every group, tabulate every layer, calibrate end to end.

1. **Scan** (cliffs): for every prunable group, the group's layers are timed at widths
   from the full width down by ``scan`` channels (in atoms), the other groups whole,
   found by bisection: the two ends first, and an interval is split only while its
   narrow end is cheaper than its wide end by more than the noise tolerance (a cliff
   inside it must be); where latency is flat (most of a wide layer's scan) two points
   stand for the whole interval. :func:`~deploykit.bench.latency_table.fit.find_steps`
   finds the cliffs, their period and the slow widths among the measured widths, and
   :func:`~deploykit.bench.latency_table.fit.ladder` extends them to the widths at the low
   side of every step down to the smallest width pruning may leave.
2. **Tables**: every call of every convolution and linear layer is timed on a grid of
   (input, output) channel counts spanning what pruning can make of it (grid points on
   the ladder where an axis follows one group), then fitted non-decreasing.
3. **Calibration**: whole copies of the model pruned uniformly and at random (ladder
   widths) are timed end to end, interleaved; ``scale``, ``fixed_ms``, ``ms_per_mb`` and
   ``ms_per_weight_mb`` are the non-negative least-squares fit of their fast runs (10th
   percentile) on the table sum, the activation and the weight megabytes, and ``load``
   is median / 10th percentile: the layer
   points are the least of several passes, so both sides of the fit describe the model
   on a machine left alone, and what contention adds is one factor that cancels in
   every latency ratio.

Single-layer measurements go through a per-device cache shared by every model.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from deploykit.bench.latency import budgeted, warm_round
from deploykit.bench.latency_table.file import (
    Calibration,
    CalibrationPoint,
    GroupCurve,
    LayerTable,
    Lut,
    LutKey,
    PointCache,
    cache_path,
    check_key,
    points_path,
    read_lut,
)
from deploykit.bench.latency_table.fit import CLIFF_TOL, find_steps, ladder, monotone2d
from deploykit.bench.latency_table.layers import LayerCall, LayerOp, record_calls
from deploykit.bench.latency_table.predictor import LatencyModel
from deploykit.bench.latency_table.timers import Timer, TimingConfig, get_timer
from deploykit.bench.latency_table.variants import prune_to_widths, uniform_widths
from deploykit.bench.machine import machine
from deploykit.errors import DeployKitError
from deploykit.graph.costs import CostModel
from deploykit.progress import Reporter


# Weights (MB, float32) above which a layer point's passes share one built layer.
HEAVY_WEIGHT_MB = 64.0


@dataclass(frozen=True)
class ProfileConfig:
    """How a table is measured.

    Attributes:
        backend: a registered timer (``ort``, ``torch``).
        timing: batch, threads, runs per layer point, precision.
        grid: points per channel axis of a layer table.
        scan: channels scanned below each group's full width for cliffs (0: no scan;
            ladders fall back to multiples of ``fallback_round``).
        fallback_round: ladder spacing where a scan finds no cliff.
        max_ratio: tables reach down to ``1 - max_ratio`` of each group's width.
        calibration: fractions of the widths at which whole uniform variants are timed.
        calibration_random: whole variants with random ladder widths timed as well.
        seed: of those random variants.
        calibration_runs: timed rounds of the calibration variants (interleaved), at most.
        calibration_budget_s: seconds the timed rounds aim at: a model whose round takes
            longer gets fewer rounds (at least 5 a pass).
        passes: every layer point is measured this many times, in alternating order, and
            the least median kept: a burst of load on a shared machine spoils one pass.
        cache: read and write the table cache and the point cache.
    """

    backend: str = "ort"
    timing: TimingConfig = TimingConfig()
    grid: int = 6
    scan: int = 32
    fallback_round: int = 8
    max_ratio: float = 0.9
    calibration: tuple[float, ...] = (1.0, 0.75, 0.5, 0.3)
    calibration_random: int = 8
    calibration_runs: int = 30
    calibration_budget_s: float = 24.0
    seed: int = 1234
    passes: int = 2
    cache: bool = True

    def settings(self) -> dict:
        """What went into a table besides its key (recorded in the file)."""
        d = asdict(self)
        d.pop("cache")
        d["timing"] = {k: v for k, v in d["timing"].items() if k in ("runs", "warmup", "budget_ms")}
        d["calibration"] = list(d["calibration"])
        return d


@dataclass
class _Call:
    """A layer call and how its channel counts follow the group widths."""

    call: LayerCall
    layer: object | None  # cost-model layer
    tied: float | None  # cin / cout where the input follows the output (depthwise, grouped)
    in_groups: list[tuple[int, float]] = field(default_factory=list)
    out_groups: list[tuple[int, float]] = field(default_factory=list)


def arch_hash(calls: Sequence[LayerCall], cost_model: CostModel) -> str:
    """A hash of every layer call's shape and every group's width: what a table depends on."""
    doc = [[c.key, c.op.key(), c.cin, c.cout] for c in calls] + [[g.id, n] for g, n in zip(cost_model.groups, cost_model.full)]
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:16]


def make_key(spec: str, input_shape: Sequence[int], calls: Sequence[LayerCall], cost_model: CostModel, cfg: ProfileConfig,
             timer: Timer) -> LutKey:
    """The key of the table for this model and these settings."""
    t = cfg.timing
    return LutKey(backend=cfg.backend, device=timer.device(), runtime=timer.runtime(), precision=t.precision, batch=t.batch,
                  threads=t.threads, model=spec, input_shape=list(input_shape), arch=arch_hash(calls, cost_model))


class Profiler:
    """Measures one model's latency table.

    Args:
        cost_model: the model's cost model (its graph holds the model and example input).
        spec: the MODEL spec (recorded in the key).
        cfg: how to measure.
        reporter: progress bars.
        ignore: module paths the graph was built with (variants are traced the same way).
    """

    def __init__(self, cost_model: CostModel, spec: str, cfg: ProfileConfig, reporter: Reporter | None = None,
                 ignore: Sequence[str] = ()) -> None:
        self.cm = cost_model
        self.graph = cost_model.graph
        self.cfg = cfg
        self.rep = reporter or Reporter()
        self.ignore = list(ignore)
        self.timer = get_timer(cfg.backend, cfg.timing)
        self.example = self.graph.example_input
        self.calls = record_calls(self.graph.model, self.example)
        self.key = make_key(spec, list(self.example.shape), self.calls, cost_model, cfg, self.timer)
        self.points = PointCache(points_path(self.key) if cfg.cache else None)
        self.full = self.cm.widths_full()
        self.prunable = [i for i, g in enumerate(self.cm.groups) if g.prunable]
        self.min_w = list(self.full)
        for gi in self.prunable:
            unit = self.cm.groups[gi].atom_size
            self.min_w[gi] = max(unit, math.ceil((1 - cfg.max_ratio) * self.full[gi] / unit) * unit)
        self._calls = [self._describe(c) for c in self.calls]

    # -- measurement -------------------------------------------------------------------------------
    def _describe(self, call: LayerCall) -> _Call:
        lay = self.cm.layers.get(call.name)
        if lay is None or lay.kind == "norm":
            return _Call(call, None, None)
        # Depthwise, and grouped convs whose whole groups go (their input is no group's member):
        # the input shrinks with the output, and the group count with both.
        follows = lay.depthwise or (lay.groups > 1 and not lay.in_terms)
        tied = call.cin / call.cout if follows else None
        return _Call(call, lay, tied, list(lay.in_terms), list(lay.out_terms))

    def dims(self, c: _Call, w: list[int]) -> tuple[int, int]:
        """A call's (cin, cout) at group widths ``w``."""
        if c.layer is None:
            return c.call.cin, c.call.cout
        cin, cout = self.cm.layer_dims(c.layer, w)
        if c.tied is not None:
            cin = c.tied * cout
        return max(1, round(cin)), max(1, round(cout))

    def measure_all(self, points: Sequence[tuple[LayerOp, int, int]], what: str) -> None:
        """Measure every point not cached yet, ``passes`` times in alternating order, keeping the least.

        A point with more than :data:`HEAVY_WEIGHT_MB` of weights takes its passes back to back on
        one built layer in the first pass: building it costs many times its runs.
        """
        todo = list(dict.fromkeys(p for p in points if self.points.get(PointCache.name(p[0].key(), p[1], p[2])) is None))
        passes = max(1, self.cfg.passes)
        heavy = {p for p in todo if p[0].weight_count(p[1], p[2]) * 4 > HEAVY_WEIGHT_MB * 1e6}
        with self.rep.task(what, len(todo) * passes) as task:
            for k in range(passes):
                for op, cin, cout in todo if k % 2 == 0 else reversed(todo):
                    big = (op, cin, cout) in heavy
                    if big and k > 0:
                        continue
                    name = PointCache.name(op.key(), cin, cout)
                    ms = self.timer.layer_ms_passes(op, cin, cout, passes) if big else self.timer.layer_ms(op, cin, cout)
                    old = self.points.new.get(name)
                    self.points.put(name, ms if old is None else min(old, ms))
                    task.advance(passes if big else 1, f"pass {k + 1}/{passes}")
                    if len(self.points.new) % 500 == 0:  # keep what was measured should the run be cut short
                        self.points.save()
        self.points.save()

    def measure(self, op: LayerOp, cin: int, cout: int) -> float:
        """One layer point (measured now unless cached)."""
        name = PointCache.name(op.key(), cin, cout)
        got = self.points.get(name)
        if got is None:
            self.measure_all([(op, cin, cout)], "layer")
            got = self.points.get(name)
        return got

    # -- 1. scan -----------------------------------------------------------------------------------
    def scan_widths(self, gi: int) -> list[int]:
        """Widths scanned for group ``gi``: full, then one atom less at a time, ``scan`` channels down."""
        unit = self.cm.groups[gi].atom_size
        top = self.full[gi]
        return sorted(w for w in range(top, top - self.cfg.scan - 1, -unit) if w >= self.min_w[gi])

    def scan(self) -> dict[str, GroupCurve]:
        """Every prunable group's scan (by bisection), cliffs and ladder."""
        members = {gi: [c for c in self._calls if c.layer is not None and gi in {g for g, _ in c.in_groups + c.out_groups}]
                   for gi in self.prunable}

        def at(gi: int, width: int) -> list[tuple[LayerOp, int, int]]:
            w = list(self.full)
            w[gi] = width
            return [(c.call.op, *self.dims(c, w)) for c in members[gi]]

        def total(gi: int, width: int) -> float:
            return sum(self.measure(*p) for p in at(gi, width))

        grid = {gi: self.scan_widths(gi) if self.cfg.scan > 0 else [] for gi in self.prunable}
        seen: dict[int, set[int]] = {gi: set() for gi in self.prunable}
        spans = [(gi, 0, len(ws) - 1) for gi, ws in grid.items() if ws]
        new = {(gi, grid[gi][i]) for gi, i, j in spans} | {(gi, grid[gi][j]) for gi, i, j in spans}
        rounds = 0
        while new:
            rounds += 1
            self.measure_all([p for gi, width in sorted(new) for p in at(gi, width)], f"scanning groups (round {rounds})")
            for gi, width in new:
                seen[gi].add(width)
            new, split = set(), []
            for gi, i, j in spans:
                ws = grid[gi]
                wider = min(total(gi, v) for v in seen[gi] if v >= ws[j])
                # Latency is (nearly) non-decreasing in width: no width inside can be a cliff unless
                # the narrow end is cheaper than everything wider by more than the tolerance.
                if j - i < 2 or total(gi, ws[i]) >= (1 - CLIFF_TOL) * wider:
                    continue
                m = (i + j) // 2
                new.add((gi, ws[m]))
                split += [(gi, i, m), (gi, m, j)]
            spans = split
        curves: dict[str, GroupCurve] = {}
        for gi in self.prunable:
            g = self.cm.groups[gi]
            widths = sorted(seen[gi])
            ms = [total(gi, width) for width in widths]
            steps = find_steps(widths, ms, unit=g.atom_size)
            lad = ladder(steps, self.min_w[gi], self.full[gi], unit=g.atom_size, fallback=self.cfg.fallback_round)
            curves[g.id] = GroupCurve(channels=self.full[gi], unit=g.atom_size, widths=widths, ms=[_sig(v) for v in ms],
                                      fit=[_sig(v) for v in steps.fit], cliffs=steps.cliffs, period=steps.period,
                                      offset=steps.offset, slow=steps.slow, ladder=lad)
        return curves

    # -- 2. tables ---------------------------------------------------------------------------------
    def _axis(self, c: _Call, terms: list[tuple[int, float]], side: int, curves: dict[int, GroupCurve]) -> tuple[list[int], list[int] | None]:
        """Grid values of one axis of a call, and its lattice of steps when the axis follows one group
        whose scan found one (the table is read at the next lattice width up)."""
        lo = self.dims(c, self.min_w)[side]
        hi = self.dims(c, self.full)[side]
        if lo >= hi:
            return [hi], None
        n = max(2, self.cfg.grid)
        if len(terms) == 1 and abs(terms[0][1] - 1.0) < 1e-9 and terms[0][0] in curves:
            gi = terms[0][0]
            curve = curves[gi]
            offset = hi - self.full[gi]  # channels of the axis that no group owns
            lad = [v + offset for v in curve.ladder]
            idx = sorted({round(i) for i in np.linspace(0, len(lad) - 1, min(n, len(lad)))})
            return sorted({lad[i] for i in idx} | {lo, hi}), (lad if curve.period else None)
        values = [min(hi, max(lo, int(round(v / 8)) * 8)) for v in np.linspace(lo, hi, n)]
        return sorted(set(values) | {lo, hi}), None

    def tables(self, curves: dict[str, GroupCurve]) -> dict[str, LayerTable]:
        """Every layer call's table on its grid."""
        by_index = {gi: curves[self.cm.groups[gi].id] for gi in self.prunable if self.cm.groups[gi].id in curves}
        specs = []
        for c in self._calls:
            cin_grid, in_lad = self._axis(c, c.in_groups, 0, by_index)
            cout_grid, out_lad = self._axis(c, c.out_groups, 1, by_index)
            if c.tied is not None:
                cin_grid, in_lad = [max(1, round(c.tied * v)) for v in cout_grid], None
            specs.append((c, cin_grid, cout_grid, in_lad, out_lad))
        grid = [(c.call.op, ci, co) for c, ig, cg, _, _ in specs
                for ci, co in (zip(ig, cg) if c.tied is not None else ((a, b) for a in ig for b in cg))]
        self.measure_all(grid, "layer tables")
        out: dict[str, LayerTable] = {}
        for c, cin_grid, cout_grid, in_lad, out_lad in specs:
            op = c.call.op
            if c.tied is not None:
                ms = [[self.measure(op, ci, co) for ci, co in zip(cin_grid, cout_grid)]]
            else:
                ms = [[self.measure(op, ci, co) for co in cout_grid] for ci in cin_grid]
            fit = monotone2d(np.asarray(ms))
            out[c.call.key] = LayerTable(layer=c.call.name, call=c.call.call, op=op.to_dict(), cin=cin_grid, cout=cout_grid,
                                         tied=c.tied is not None, ms=[[_sig(v) for v in r] for r in ms],
                                         fit=[[_sig(v) for v in r] for r in fit], in_ladder=in_lad, out_ladder=out_lad)
        return out

    # -- 3. calibration ----------------------------------------------------------------------------
    def variant_widths(self, fraction: float, curves: dict[str, GroupCurve]) -> list[int]:
        """Group widths of the uniform variant at ``fraction`` (ladder widths)."""
        full = {self.cm.groups[gi].id: self.full[gi] for gi in self.prunable}
        allowed = {gid: [w for w in c.ladder if w >= self.min_w[self.cm.index[gid]]] for gid, c in curves.items()}
        chosen = uniform_widths(full, fraction, allowed)
        w = list(self.full)
        for gid, v in chosen.items():
            w[self.cm.index[gid]] = v
        return w

    def calibration_variants(self, curves: dict[str, GroupCurve]) -> dict[str, list[int]]:
        """Whole variants to time: uniform fractions of every width, and random mixes (ladder widths)
        that keep the activation and weight terms from moving in lockstep with the layers."""
        out = {f"uniform {f:.2f}": self.variant_widths(f, curves) for f in sorted(set(self.cfg.calibration) | {1.0}, reverse=True)}
        rng = np.random.default_rng(self.cfg.seed)
        for i in range(self.cfg.calibration_random):
            w = list(self.full)
            for gi in self.prunable:
                g = self.cm.groups[gi]
                lad = [v for v in curves[g.id].ladder if v >= self.min_w[gi]] if g.id in curves else []
                if lad and rng.random() > 0.15:
                    w[gi] = int(rng.choice(lad))
            out[f"random {i}"] = w
        return out

    def calibrate(self, layers: dict[str, LayerTable], curves: dict[str, GroupCurve]) -> tuple[Calibration, float]:
        """Time whole variants end to end; fit the calibration. Returns it and the base latency (median)."""
        probe = Lut(key=self.key, created="", machine={}, settings={}, base_ms=0.0, layers=layers, groups=curves,
                    calibration=Calibration())
        lm = LatencyModel(self.cm, probe)
        variants = self.calibration_variants(curves)
        fns, rows = {}, {}
        with self.rep.task("calibration variants", len(variants)) as task:
            for name, w in variants.items():
                module = self.graph.model if w == self.full else prune_to_widths(
                    self.graph.model, self.example, {g.id: w[i] for i, g in enumerate(self.cm.groups)}, self.ignore)
                fns[name] = self.timer.model_fn(module, self.example)
                rows[name] = (lm.layers_ms(w), lm.activation_mb(w), lm.weight_mb(w))
                task.advance()
        # One untimed round absorbs first-call setup (every timed call then follows an untimed one of the
        # same model) and says how long a round takes: a slow model gets fewer rounds, at least 5 a pass.
        round_s = warm_round(fns)
        passes = max(1, self.cfg.passes)
        per_pass = max(5, budgeted(self.cfg.calibration_budget_s / passes, round_s, 5, self.cfg.calibration_runs // passes))
        times: dict[str, list[float]] = {f: [] for f in fns}
        fast: dict[str, float] = {}
        with self.rep.task("calibration runs", per_pass * passes) as task:
            for _ in range(passes):  # the fastest pass: a burst of load spoils one pass, not the fit
                got = self.timer.time_models(fns, per_pass, 0, task)
                for f, t in got.items():
                    times[f] += t
                    fast[f] = min(fast.get(f, np.inf), float(np.percentile(t, 10)) * 1e3)
        median = {f: float(np.median(t)) * 1e3 for f, t in times.items()}
        cal = fit_calibration([(fast[f], *rows[f]) for f in rows])
        cal.load = round(float(np.median([median[f] / fast[f] for f in median])), 6)
        cal.points = [CalibrationPoint(variant=f, measured_ms=round(median[f], 4), fast_ms=round(fast[f], 4),
                                       layers_ms=round(lay, 4), activation_mb=round(act, 4), weight_mb=round(wt, 4),
                                       predicted_ms=round(cal.at(lay, act, wt), 4))
                      for f, (lay, act, wt) in rows.items()]
        return cal, median[next(iter(variants))]

    # -- all ---------------------------------------------------------------------------------------
    def run(self) -> Lut:
        """Measure the whole table."""
        t0 = time.perf_counter()
        curves = self.scan()
        t1 = time.perf_counter()
        layers = self.tables(curves)
        t2 = time.perf_counter()
        cal, base_ms = self.calibrate(layers, curves)
        t3 = time.perf_counter()
        phases = {"scan": round(t1 - t0, 1), "layers": round(t2 - t1, 1), "calibration": round(t3 - t2, 1)}
        return Lut(key=self.key, created=machine()["date"], machine=machine(), settings=self.cfg.settings(),
                   base_ms=round(base_ms, 4), seconds=round(t3 - t0, 1), phases=phases, layers=layers, groups=curves,
                   calibration=cal)


def _sig(v: float) -> float:
    """Seven significant digits: far below measurement noise, and short in the file."""
    return float(f"{float(v):.7g}")


def fit_calibration(points: list[tuple[float, float, float, float]]) -> Calibration:
    """Measured ms on (table ms, 1, activation MB, weight MB): the terms chosen by leave-one-out.

    Every candidate keeps the table and the constant and adds neither, one or both memory
    terms; each is a non-negative least-squares fit in relative error (every variant counts
    alike), scored by its leave-one-out relative error; a term is kept only if it cuts that
    error by at least a tenth: with a handful of variants a term the data cannot pin down would
    otherwise trade off against the table's scale. A fit that would explain the latency
    without the table fixes the scale at 1.
    """
    from itertools import combinations

    from scipy.optimize import nnls

    y = np.array([p[0] for p in points])
    cols = {name: np.array([p[i] for p in points]) for i, name in ((1, "layers"), (2, "act"), (3, "weight"))}
    cols["fixed"] = np.ones_like(y)

    def fit(names: tuple[str, ...], idx: np.ndarray) -> dict[str, float]:
        a = np.stack([cols[n][idx] for n in names], axis=1) / y[idx, None]
        coef, _ = nnls(a, np.ones(len(idx)))
        return dict(zip(names, coef))

    def predict(c: dict[str, float], i: int) -> float:
        return sum(v * cols[n][i] for n, v in c.items())

    best: tuple[float, int, dict[str, float]] | None = None
    n = len(points)
    for k in range(3):
        for extra in combinations(("act", "weight"), k):
            names = ("layers", "fixed", *extra)
            if n <= len(names):
                continue
            loo = np.mean([abs(predict(fit(names, np.delete(np.arange(n), i)), i) - y[i]) / y[i] for i in range(n)])
            if best is None or loo < 0.9 * best[0]:  # a term must cut the error by a tenth to stay
                best = (float(loo), k, fit(names, np.arange(n)))
    coef = best[2] if best is not None else {}
    if coef.get("layers", 0.0) > 0.25:
        return Calibration(scale=_sig(coef["layers"]), fixed_ms=_sig(coef.get("fixed", 0.0)),
                           ms_per_mb=_sig(coef.get("act", 0.0)), ms_per_weight_mb=_sig(coef.get("weight", 0.0)))
    # The table must carry the prediction: scale 1, the rest fitted to what it leaves.
    one = np.ones_like(y)
    c, _ = nnls(np.stack([one, cols["act"], cols["weight"]], axis=1) / y[:, None], (y - cols["layers"]) / y)
    return Calibration(scale=1.0, fixed_ms=_sig(c[0]), ms_per_mb=_sig(c[1]), ms_per_weight_mb=_sig(c[2]))


def load_or_profile(cost_model: CostModel, spec: str, cfg: ProfileConfig, reporter: Reporter | None = None,
                    ignore: Sequence[str] = (), lut_path: str | None = None, refresh: bool = False) -> tuple[Lut, str]:
    """The table for this model and settings: ``lut_path``, else the cache, else measured now (and cached).

    Returns:
        The table and where it came from (a path, or ``measured``).

    Raises:
        DeployKitError: ``lut_path`` is missing, malformed, or was measured for another
            architecture or setting.
    """
    prof = Profiler(cost_model, spec, cfg, reporter, ignore)
    if lut_path is not None:
        lut = read_lut(lut_path)
        # A given table sets its own backend, device and batch; it must describe this architecture.
        for field_ in ("arch", "input_shape"):
            if getattr(lut.key, field_) != getattr(prof.key, field_):
                what = "model architecture" if field_ == "arch" else "input shape"
                raise DeployKitError(f"latency table {lut_path} was measured for another {what} "
                                     f"({lut.key.model}, input {lut.key.input_shape}); rebuild it with deploykit profile")
        return lut, str(lut_path)
    path = cache_path(prof.key)
    if cfg.cache and path.is_file() and not refresh:
        try:
            lut = read_lut(path)
            check_key(lut, prof.key, str(path))
            return lut, str(path)
        except Exception:  # noqa: BLE001 - a damaged cache entry is measured again
            pass
    (reporter or Reporter()).log(f"measuring the latency table of {spec} on {cfg.backend} (cached in {path})")
    lut = prof.run()
    if cfg.cache:
        lut.save(path)
    return lut, "measured"

