"""End-to-end latency predicted from a latency table, for any vector of group widths.

The cost model knows each weighted layer's (input, output) channels as a function of
the group widths; the table knows what a layer costs at those channels. The
prediction is::

    load × (scale × Σ_calls table(cin, cout) + fixed_ms + ms_per_mb × activation MB + ms_per_weight_mb × weight MB)

where activation bytes (the cost model's prediction) stand for the ops the table
does not measure (element-wise, pooling, layout changes) and the constants come from
the table's calibration. On an axis that follows one group the table is read at the
next ladder width up, because a backend that computes channels in blocks pays for a
partial block in full.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from deploykit.bench.latency_table.file import Lut
from deploykit.errors import DeployKitError
from deploykit.graph.costs import CostModel

MB = 1e6


def _ceil(ladder: list[int] | None, v: float) -> float:
    """The smallest ladder width ≥ ``v`` (``v`` itself past the top)."""
    if not ladder:
        return v
    i = bisect.bisect_left(ladder, v - 1e-9)
    return float(ladder[i]) if i < len(ladder) else v


def _bracket(grid: np.ndarray, v: float) -> tuple[int, float]:
    """Index of the cell holding ``v`` and the position in it (clamped to the grid)."""
    n = len(grid)
    if n == 1:
        return 0, 0.0
    i = int(np.clip(np.searchsorted(grid, v) - 1, 0, n - 2))
    lo, hi = grid[i], grid[i + 1]
    return i, float(np.clip((v - lo) / (hi - lo), 0.0, 1.0))


@dataclass
class _Table:
    layer: object  # the cost model's _Layer, or None for a layer no group touches
    cin0: float
    cout0: float
    tied_ratio: float | None  # depthwise: cin = ratio × cout
    cin: np.ndarray
    cout: np.ndarray
    fit: np.ndarray
    in_ladder: list[int] | None
    out_ladder: list[int] | None

    def at(self, cin: float, cout: float, stepped: bool) -> float:
        if stepped:
            cin, cout = _ceil(self.in_ladder, cin), _ceil(self.out_ladder, cout)
        if self.tied_ratio is not None:
            j, t = _bracket(self.cout, cout)
            row = self.fit[0]
            return float(row[j] if len(row) == 1 else row[j] * (1 - t) + row[j + 1] * t)
        i, u = _bracket(self.cin, cin)
        j, t = _bracket(self.cout, cout)
        z = self.fit
        i2 = min(i + 1, z.shape[0] - 1)
        j2 = min(j + 1, z.shape[1] - 1)
        top = z[i, j] * (1 - t) + z[i, j2] * t
        bot = z[i2, j] * (1 - t) + z[i2, j2] * t
        return float(top * (1 - u) + bot * u)


class LatencyModel:
    """Predicted latency (ms) as a function of group widths.

    Args:
        cost_model: the model's cost model (its groups and layers must be those the table
            was measured on).
        lut: the latency table.

    Raises:
        DeployKitError: the table names a layer or group the model does not have.
    """

    def __init__(self, cost_model: CostModel, lut: Lut) -> None:
        self.cm = cost_model
        self.lut = lut
        self.cal = lut.calibration
        ids = {g.id: i for i, g in enumerate(cost_model.groups)}
        for gid, curve in lut.groups.items():
            if gid not in ids or cost_model.full[ids[gid]] != curve.channels:
                raise DeployKitError(f"latency table has group {gid!r} ({curve.channels} channels) the model does not have; "
                                     "it was measured on another model")
        self.tables: list[_Table] = []
        self.by_group: list[list[int]] = [[] for _ in cost_model.groups]
        for key, t in lut.layers.items():
            lay = cost_model.layers.get(t.layer)
            tied = t.cin[0] / t.cout[0] if t.tied and t.cout[0] else None
            tab = _Table(lay, float(t.cin[-1]), float(t.cout[-1]), tied, np.asarray(t.cin, float), np.asarray(t.cout, float),
                         np.asarray(t.fit, float), t.in_ladder, t.out_ladder)
            self.tables.append(tab)
            if lay is not None:
                for gi in {g for g, _ in lay.in_terms + lay.out_terms}:
                    self.by_group[gi].append(len(self.tables) - 1)

    # -- pieces ------------------------------------------------------------------------------------
    def _dims(self, tab: _Table, w: list[int]) -> tuple[float, float]:
        if tab.layer is None:
            return tab.cin0, tab.cout0
        cin, cout = self.cm.layer_dims(tab.layer, w)
        if tab.tied_ratio is not None:
            cin = tab.tied_ratio * cout
        return cin, cout

    def layers_ms(self, w: list[int], stepped: bool = True, only: list[int] | None = None) -> float:
        """Σ of the table over every layer call (or the calls ``only``) at widths ``w``."""
        idx = range(len(self.tables)) if only is None else only
        return sum(self.tables[i].at(*self._dims(self.tables[i], w), stepped) for i in idx)

    def weight_mb(self, w: list[int], only: list | None = None) -> float:
        """Predicted fp32 weight megabytes at widths ``w`` (of the layers ``only``, else the whole model)."""
        cm = self.cm
        if only is not None:
            return 4 * sum(cm._layer_params(lay, w) for lay in only) / MB
        return 4 * (cm._fixed_params + sum(cm._layer_params(lay, w) for lay in cm.layers.values())) / MB

    def activation_mb(self, w: list[int]) -> float:
        """Predicted activation megabytes at widths ``w``."""
        cm = self.cm
        return (cm.base.activation_bytes - sum((cm.full[g] - w[g]) * cm.act_per_channel[g] for g in range(len(w)))) / MB

    # -- what selection asks -----------------------------------------------------------------------
    def predict(self, w: list[int] | None = None) -> float:
        """Predicted end-to-end milliseconds at group widths ``w`` (current widths by default)."""
        w = self.cm.widths() if w is None else w
        return self.cal.at(self.layers_ms(w), self.activation_mb(w), self.weight_mb(w))

    def saving(self, gi: int, k: int, w: list[int]) -> float:
        """Milliseconds saved by removing ``k`` more channels of group ``gi`` at widths ``w``.

        Within a latency step the stepped table saves nothing yet; the smooth envelope's
        saving is used there, so the group still ranks (behind groups whose next chunk
        crosses a step).
        """
        w2 = list(w)
        w2[gi] -= k
        only = self.by_group[gi]
        stepped = self.layers_ms(w, True, only) - self.layers_ms(w2, True, only)
        if stepped <= 1e-12:
            stepped = self.layers_ms(w, False, only) - self.layers_ms(w2, False, only)
        lays = self.cm.group_layers[gi]
        weights = self.weight_mb(w, lays) - self.weight_mb(w2, lays)
        cal = self.cal
        return cal.at(max(stepped, 0.0), k * self.cm.act_per_channel[gi] / MB, weights) - cal.load * cal.fixed_ms

    def ladders(self) -> dict[str, list[int]]:
        """Per group id, the widths at the low side of latency steps (``--round-to auto``)."""
        return {gid: list(c.ladder) for gid, c in self.lut.groups.items()}
