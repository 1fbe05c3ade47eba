"""The latency table file (``deploykit-lut/1``), its cache key and where it is cached.

A table belongs to one model architecture measured on one backend, device,
precision, batch size and thread count; all of these form its :class:`LutKey`, and
the cache file name is derived from the key, so a table is never used for a
setting it was not measured in. Its content:

* ``layers``: for every call of every convolution and linear layer, latency on a
  grid of (input, output) channel counts, measured and fitted monotone;
* ``groups``: for every prunable group, the latency of its layers over a fine scan
  of widths below the full width, the cliffs found there and the *ladder* of widths
  at the low side of each step (what ``--round-to auto`` chooses from);
* ``calibration``: how the sum of layer times maps to end-to-end latency,
  ``load × (scale × layers + fixed + per_mb × activation MB + per_weight_mb × weight MB)``,
  fitted on whole pruned variants of the model measured end to end: the bracket on
  their fast runs (the 10th percentile, what the model costs when the machine leaves
  it alone), ``load`` the median over the 10th percentile (what a shared machine adds;
  it cancels in every latency ratio). A lone layer timed again and again finds its
  weights in cache; in a whole network they come from memory: the weight term.

Measurements of single layers are also kept in a per-device *point cache*, shared by
every model measured with the same settings.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from deploykit.atomic import write_json
from deploykit.errors import DeployKitError

FORMAT = "deploykit-lut/1"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LutKey(_Strict):
    """Everything a latency table depends on; equal keys mean an interchangeable table."""

    backend: str
    device: str
    runtime: str
    precision: str
    batch: int = Field(ge=1)
    threads: int | None
    model: str
    input_shape: list[int]
    arch: str  # hash of the layers' shapes and the groups' widths at trace time

    def digest(self) -> str:
        """A short hash of the whole key."""
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()[:12]

    def file_name(self) -> str:
        """``MODEL-BACKEND-PRECISION-bB-tT-HASH.json`` (readable, and unique per key)."""
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.model).strip("_")[-60:] or "model"
        threads = self.threads if self.threads else "auto"
        return f"{slug}-{self.backend}-{self.precision}-b{self.batch}-t{threads}-{self.digest()}.json"


class LayerTable(_Strict):
    """One call of one weighted layer: latency over a grid of channel counts.

    ``ms[i][j]`` is measured at ``cin[i]`` input and ``cout[j]`` output channels; ``fit`` is the
    same grid made non-decreasing along both axes. A ``tied`` (depthwise) layer has a single row:
    its input channels follow its output channels. ``in_ladder``/``out_ladder`` list the widths at
    the low side of latency steps on that axis, when the axis follows one group; a width between
    two of them costs what the next one up costs (the backend pads to its block size).
    """

    layer: str
    call: int = 0
    op: dict[str, Any]
    cin: list[int]
    cout: list[int]
    tied: bool = False
    ms: list[list[float]]
    fit: list[list[float]]
    in_ladder: list[int] | None = None
    out_ladder: list[int] | None = None


class GroupCurve(_Strict):
    """A prunable group's layers scanned over widths just below its full width."""

    channels: int
    unit: int = 1
    widths: list[int]
    ms: list[float]
    fit: list[float]
    cliffs: list[int]
    period: int | None
    offset: int | None = None
    slow: list[int]
    ladder: list[int]


class CalibrationPoint(_Strict):
    """One whole variant measured end to end (median and 10th percentile)."""

    variant: str
    measured_ms: float
    fast_ms: float
    layers_ms: float
    activation_mb: float
    weight_mb: float
    predicted_ms: float


class Calibration(_Strict):
    """End-to-end latency = ``load`` × (``scale`` × Σ layers + ``fixed_ms`` + ``ms_per_mb`` × activation MB
    + ``ms_per_weight_mb`` × weight MB)."""

    scale: float = 1.0
    fixed_ms: float = 0.0
    ms_per_mb: float = 0.0
    ms_per_weight_mb: float = 0.0
    load: float = 1.0

    def at(self, layers_ms: float, activation_mb: float, weight_mb: float) -> float:
        """End-to-end milliseconds from the table sum and the memory terms."""
        return self.load * (self.scale * layers_ms + self.fixed_ms + self.ms_per_mb * activation_mb
                            + self.ms_per_weight_mb * weight_mb)
    points: list[CalibrationPoint] = []


class Lut(_Strict):
    """A whole latency table (the file ``deploykit profile`` writes)."""

    format: Literal["deploykit-lut/1"] = FORMAT
    key: LutKey
    created: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    base_ms: float
    seconds: float = 0.0
    phases: dict[str, float] = {}  # seconds per phase: scan, layers, calibration
    layers: dict[str, LayerTable]
    groups: dict[str, GroupCurve]
    calibration: Calibration

    def save(self, path: str | Path) -> None:
        """Write atomically."""
        write_json(path, self.model_dump(mode="json"))


def read_lut(path: str | Path) -> Lut:
    """Parse and validate a table file.

    Raises:
        DeployKitError: missing file, bad JSON, or not a ``deploykit-lut/1`` document.
    """
    from deploykit.config import read_document

    return read_document(path, Lut, f"a deploykit latency table ({FORMAT})",
                         f"; make one with: deploykit profile MODEL --out {path}")


def check_key(lut: Lut, key: LutKey, source: str) -> None:
    """Refuse a table measured for another architecture or setting than ``key``.

    Raises:
        DeployKitError: naming the first field that differs.
    """
    have, want = lut.key.model_dump(), key.model_dump()
    for field in ("arch", "backend", "precision", "batch", "threads", "input_shape", "device", "runtime"):
        if have[field] != want[field]:
            what = "model architecture" if field == "arch" else field
            raise DeployKitError(f"latency table {source} was measured with another {what} ({have[field]!r}, "
                                 f"not {want[field]!r}); rebuild it with deploykit profile")


def cache_root() -> Path:
    """``$DEPLOYKIT_CACHE/latency`` (else the user cache)."""
    from deploykit.zoo.digits import cache_dir

    return cache_dir() / "latency"


def cache_path(key: LutKey) -> Path:
    """Where the table for ``key`` is cached."""
    return cache_root() / key.file_name()


def points_path(key: LutKey) -> Path:
    """The per-device cache of single-layer measurements shared by every model."""
    dev = hashlib.sha256(f"{key.device}|{key.runtime}".encode()).hexdigest()[:12]
    threads = key.threads if key.threads else "auto"
    return cache_root() / "points" / f"{key.backend}-{key.precision}-b{key.batch}-t{threads}-{dev}.json"


class PointCache:
    """Single-layer measurements by ``op|cin|cout``, read once and merged back on save."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.points: dict[str, float] = self._read(path) if path is not None else {}
        self.new: dict[str, float] = {}

    @staticmethod
    def _read(path: Path) -> dict[str, float]:
        try:
            return {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
        except (OSError, ValueError, AttributeError):
            return {}  # a missing or damaged cache is only a slower run

    @staticmethod
    def name(op_key: str, cin: int, cout: int) -> str:
        """The cache entry of one measurement."""
        return f"{op_key}|{cin}|{cout}"

    def get(self, name: str) -> float | None:
        """A cached measurement."""
        return self.new.get(name, self.points.get(name))

    def put(self, name: str, ms: float) -> None:
        """Record a measurement."""
        self.new[name] = ms

    def save(self) -> None:
        """Merge new measurements into the file (another process may have added some meanwhile)."""
        if self.path is None or not self.new:
            return
        merged = {**self._read(self.path), **self.new}
        write_json(self.path, merged)
        self.points, self.new = merged, {}
