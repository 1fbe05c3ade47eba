"""Read benchmark results measured elsewhere (a Jetson bundle's ``results.json``) into
the same :class:`~deploykit.bench.latency.LatencyResult` rows local benchmarks produce.

The file is validated strictly (unknown keys fail loudly), against the schema the bundle
carries as ``results.schema.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from deploykit.bench.latency import LatencyResult
from deploykit.errors import DeployKitError
from deploykit.export.bundle import RESULTS_SCHEMA_ID


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Row(_Strict):
    """One (model, batch) measurement."""

    model: str
    batch: int = Field(ge=1)
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    throughput: float
    gpu_compute_p50_ms: float | None = None
    runs: int | None = None


class Settings(_Strict):
    """How the device run was configured."""

    warmup_ms: float
    duration_s: float
    cuda_graph: bool
    batches: list[int]


class Imported(_Strict):
    """A whole ``results.json`` (schema ``deploykit-bench/1``)."""

    schema_id: Literal["deploykit-bench/1"] = Field(alias="schema")
    source: str
    model: str
    precision: Literal["fp32", "fp16", "int8"]
    created: str
    device: dict[str, str | None]
    settings: Settings
    reference_check: dict[str, Any] | None = None
    results: list[Row]

    def latency_results(self) -> list[LatencyResult]:
        """The rows as local-benchmark results."""
        return [LatencyResult(r.model, r.batch, r.p50_ms, r.p90_ms, r.p99_ms, r.mean_ms, r.std_ms, r.throughput)
                for r in self.results]


assert RESULTS_SCHEMA_ID == "deploykit-bench/1"  # the Literal above must follow the bundle's schema id


def read_results(path: str | Path) -> Imported:
    """Parse and validate a ``results.json``.

    Raises:
        DeployKitError: missing file, bad JSON, or a document that breaks the schema
            (the first problem, with its location).
    """
    from deploykit.config import read_document

    return read_document(path, Imported, f"a deploykit results file ({RESULTS_SCHEMA_ID})")
