"""The sidecar beside an exported model: ``OUT.onnx.json`` / ``OUT.engine.json``.

It carries what the model file cannot: the preprocessing, the class labels, the I/O names,
and provenance (the spec it came from, the precision, the calibration, the TensorRT build).
A sidecar is data from a file, possibly edited or received from elsewhere: it is validated
against :class:`SidecarDoc` before anything uses it, and the spec it records is provenance
only: nothing is ever built or imported from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from deploykit.config import MAX_ITEMS, StrictDocument, Text, read_json, validate_document
from deploykit.errors import DeployKitError
from deploykit.zoo.base import Dim, PreprocessDoc, check_input_shape

SIDECAR_WHAT = "a deploykit sidecar (preprocessing, labels and I/O names of an exported model)"
Name = Annotated[str, Field(min_length=1, max_length=200)]
# Where ONNX Runtime's and TensorRT's opsets lie (the exporter writes 7..22).
MAX_OPSET = 100


class CalibrationDoc(StrictDocument):
    """How an INT8 model's activation ranges were calibrated (deploykit.export.precision)."""

    data: Text | None = None
    samples: int = Field(ge=0, le=1 << 31)
    method: Text
    activations: Text | None = None
    weights: Text | None = None
    kept_float: list[Name] = Field(default_factory=list, max_length=MAX_ITEMS)  # layers left unquantized
    budget: dict[str, Any] | None = None  # --max-drop: held-out measurements and the sensitivity report


class DetectionDoc(StrictDocument):
    """How a detector's output is read and post-processed (the Engine's decode and NMS).

    ``head: yolo``: the output is ``[N, 4 + classes, anchors]`` (cx, cy, w, h in model-input
    pixels, then class scores), as :class:`deploykit.zoo.yolo_export.YoloDecoded` exports it.
    The thresholds are the Engine's defaults (Ultralytics' predict defaults); an Engine may
    override them.
    """

    head: Literal["yolo"]
    conf: float = Field(0.25, ge=0, le=1)
    iou: float = Field(0.7, ge=0, le=1)
    max_det: int = Field(300, ge=1, le=1 << 20)
    max_candidates: int = Field(30000, ge=1, le=1 << 20)


class SidecarDoc(StrictDocument):
    """The schema of a sidecar: what ``export_onnx`` writes, plus what precision conversion
    (``precision``, ``kept_fp32_ops``, ``calibration``) and an engine build (``tensorrt``) add."""

    source: Text
    base_spec: Text
    input_shape: list[Dim] = Field(min_length=2, max_length=8)
    input: Name
    output: Name
    outputs: list[Name] = Field(min_length=1, max_length=1000)
    task: Literal["classification", "detection"]
    opset: int = Field(ge=1, le=MAX_OPSET)
    preprocess: PreprocessDoc
    labels: list[Text] | None = Field(None, min_length=1, max_length=MAX_ITEMS)
    # A detector the Engine can serve says how to read its output; without it, predict() refuses.
    detection: DetectionDoc | None = None
    precision: Literal["fp32", "fp16", "int8"] | None = None
    kept_fp32_ops: list[Name] | None = Field(None, max_length=1000)
    calibration: CalibrationDoc | None = None
    # What TensorRT reported about the build (versions, timings): recorded, never acted on.
    tensorrt: dict[Name, Any] | None = Field(None, max_length=200)

    @field_validator("input_shape")
    @classmethod
    def _shape(cls, v: list[int]) -> list[int]:
        return check_input_shape(v)

    @model_validator(mode="after")
    def _output_listed(self) -> SidecarDoc:
        if self.output not in self.outputs:
            raise ValueError(f"output {self.output!r} is not one of outputs {self.outputs[:5]}")
        if self.detection is not None and self.task != "detection":
            raise ValueError(f"detection settings are given for a {self.task} model; they belong to task detection")
        return self


def sidecar_path(model_path: str | Path) -> Path:
    """``OUT.onnx.json``: preprocessing, labels and provenance beside the model file."""
    return Path(f"{model_path}.json")


def read_sidecar(model_path: str | Path) -> dict[str, Any]:
    """The validated sidecar of ``model_path`` (an ``.onnx`` or engine file), as a dict.

    Keys the file does not set are left out (``side.get("precision", "fp32")`` still works).

    Raises:
        DeployKitError: one line: no sidecar, unreadable or invalid JSON, or the first schema violation.
    """
    p = sidecar_path(model_path)
    if not p.is_file():
        raise DeployKitError(f"{model_path} has no sidecar {p.name} (preprocessing, labels); "
                             "re-export it with deploykit export")
    return validate_sidecar(read_json(p, SIDECAR_WHAT), str(p))


def validate_sidecar(doc: Any, source: str) -> dict[str, Any]:
    """Check a parsed sidecar against :class:`SidecarDoc`; the sidecar as a dict."""
    return validate_document(doc, SidecarDoc, source, SIDECAR_WHAT).model_dump(exclude_unset=True)
