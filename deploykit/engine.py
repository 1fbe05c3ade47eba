"""``deploykit.Engine``: the drop-in for edge applications.

    engine = deploykit.Engine("r20_int8.onnx")        # or an engine file, bundle or artifact dir
    pred = engine.predict(frame)                       # uint8 HWC image (RGB; color="BGR" for OpenCV)
    pred.labels[0], pred.scores[0]                     # top-k, best first
    logits = engine(batch)                             # raw NCHW float32 in, raw outputs out

    det = deploykit.Engine("yolov8n.onnx").predict(frame)   # a detector (task "detection" in its sidecar)
    det.boxes, det.scores, det.labels                  # x1, y1, x2, y2 in the frame's pixels, best first

The preprocessing (size, mean, std, scale, channels, color order) and the labels travel
with the model: the sidecar ``OUT.onnx.json`` / ``OUT.engine.json`` written by
``deploykit export``, or ``plan.json`` of an artifact directory. Backend ``auto`` picks
TensorRT when a GPU and TensorRT are present, else ONNX Runtime (an artifact directory
runs in PyTorch). Pre/post-processing run the CUDA kernels on the GPU and the same
math (the host build of the kernels) on the CPU.

An Engine keeps no per-call state; the runners are thread-safe, so one Engine may
serve several threads at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deploykit.errors import DeployKitError
from deploykit.export.onnx import INPUT_NAME, OUTPUT_NAME, read_sidecar, sidecar_path
from deploykit.registry import unknown_name_message
from deploykit.runtime.backends import RUNNERS, auto_backend, load_runner
from deploykit.runtime.base import Runner
from deploykit.kernels.detection import DetectSettings, geometry_row
from deploykit.kernels.params import letterbox_geometry
from deploykit.zoo.base import Preprocess, check_labels


@dataclass(frozen=True)
class Detections:
    """The objects found in one image, best first.

    Attributes:
        boxes: float32 ``[K, 4]``: x1, y1, x2, y2 in the original image's pixels.
        scores: float32 ``[K]``: the class score of each box.
        classes: int ``[K]``: class indices.
        labels: the class names (the indices as text when the model has none).
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    labels: list[str]

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class Prediction:
    """Top-k classes of one image, best first."""

    labels: list[str]
    scores: list[float]
    indices: list[int]

    @property
    def label(self) -> str:
        """The top-1 label."""
        return self.labels[0]

    @property
    def score(self) -> float:
        """The top-1 probability."""
        return self.scores[0]


def model_config(path: str | Path) -> dict[str, Any]:
    """Preprocessing, labels and I/O names stored with the model at ``path``, validated.

    An artifact's ``plan.json`` is read through the plan schema, a sidecar through the
    sidecar schema; labels that do not match an ONNX model's output width are refused here
    rather than failing (or mislabelling) at predict time.

    Raises:
        DeployKitError: one line naming the file and what is wrong with it.
    """
    p = Path(path)
    if p.is_dir() and (p / "plan.json").is_file():
        from deploykit.prune.artifact import read_plan

        plan = read_plan(p)
        return {"preprocess": plan["preprocess"], "labels": plan.get("labels"),
                "input": INPUT_NAME, "output": OUTPUT_NAME, "task": None}  # task: from the model, once built
    if p.is_dir() and (p / "model.onnx").is_file():
        return _sidecar_config(p / "model.onnx")
    if p.suffix in (".onnx", ".engine", ".plan"):
        if not p.is_file():
            raise DeployKitError(f"model file {path} does not exist")
        return _sidecar_config(p)
    raise DeployKitError(f"{path} is not an .onnx or .engine file, a bundle directory or an artifact directory")


def _sidecar_config(model_file: Path) -> dict[str, Any]:
    """The validated sidecar of ``model_file``, its labels checked against an ONNX model's outputs."""
    side = read_sidecar(model_file)
    if side["task"] == "classification" and model_file.suffix == ".onnx":
        check_labels(side.get("labels"), _onnx_output_width(model_file, side["output"]), str(sidecar_path(model_file)))
    if side.get("detection") and model_file.suffix == ".onnx":
        rows = _onnx_output_width(model_file, side["output"], ndim=3)  # [batch, 4 + classes, anchors]
        check_labels(side.get("labels"), rows - 4 if rows is not None else None, str(sidecar_path(model_file)))
    return side


def _onnx_output_width(path: Path, name: str, ndim: int = 2) -> int | None:
    """The static size of dimension 1 of an ``ndim``-D ONNX output: classes of ``[batch, classes]``
    (None when unknown)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - an unreadable model is reported by the runner that loads it
        return None
    for out in proto.graph.output:
        dims = out.type.tensor_type.shape.dim
        if out.name == name and len(dims) == ndim and dims[1].HasField("dim_value"):
            return int(dims[1].dim_value)
    return None


def _positive_int(value: object) -> bool:
    """Whether ``value`` is an int ≥ 1 (numpy integers count; bools do not)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


class Engine:
    """Load a model once; classify or detect in images, or run raw tensors, from any number of threads.

    A detector (task ``detection`` with a ``detection`` block in its sidecar, or an artifact of
    a YOLO detector) is letterboxed, run, and post-processed by the detection kernels (decode
    of the YOLO head, class-aware NMS, boxes mapped back to each image): :meth:`predict` then
    returns :class:`Detections`.

    Args:
        path: an ``.onnx`` file (any precision), an ``.engine`` file, a bundle directory
            (``model.onnx`` inside) or an artifact directory (``plan.json``).
        backend: ``auto``, ``trt``, ``ort`` or ``torch``.
        color: channel order of the images given to :meth:`predict` (``RGB`` or ``BGR``).
        letterbox: keep the aspect ratio when resizing (pad with ``pad_value``); on whenever the
            model's preprocessing says ``resize: letterbox`` (YOLO), with its pad value.
        top_k: classes returned per image by default.
        max_batch: largest batch sent to the runner at once (TensorRT engines are built
            for 1..8 by default).
        threads: ONNX Runtime intra-op threads.
        trust_factory: let an artifact's plan.json name a ``module:function`` factory
            (it imports and runs that code); registered families need no opt-in.
        detection: a detector's thresholds (confidence, IoU, detections per image), replacing
            those its sidecar gives (defaults: Ultralytics' predict settings).
    """

    def __init__(self, path: str | Path, backend: str = "auto", *, color: str = "RGB", letterbox: bool = False,
                 pad_value: float = 114.0, top_k: int = 5, max_batch: int | None = None, threads: int | None = None,
                 trust_factory: bool = False, detection: DetectSettings | None = None) -> None:
        if backend != "auto" and backend not in RUNNERS:
            raise DeployKitError(unknown_name_message("backend", backend, ["auto", *RUNNERS.names()]))
        if color not in ("RGB", "BGR"):
            raise DeployKitError(f"unknown color order {color!r}; valid: RGB, BGR")
        if not _positive_int(top_k):
            raise DeployKitError(f"Engine(top_k={top_k!r}): top_k must be a positive integer "
                                 "(classes per image), e.g. 5")
        if max_batch is not None and not _positive_int(max_batch):
            raise DeployKitError(f"Engine(max_batch={max_batch!r}): max_batch must be a positive integer "
                                 "(images per runner call) or None (the whole batch at once)")
        if threads is not None and not _positive_int(threads):
            raise DeployKitError(f"Engine(threads={threads!r}): threads must be a positive integer or None "
                                 "(ONNX Runtime's default)")
        self.path = Path(path)
        cfg = model_config(self.path)
        self.preprocess_config = Preprocess.from_dict(cfg["preprocess"])
        self.labels: list[str] | None = cfg.get("labels")
        self.input_name, self.output_name = cfg.get("input", INPUT_NAME), cfg.get("output", OUTPUT_NAME)
        self.backend = auto_backend(self.path) if backend == "auto" else backend
        from deploykit.zoo import trusting_factories

        with trusting_factories(trust_factory):  # the torch runner rebuilds an artifact from its plan
            self.runner: Runner = load_runner(self.path, backend=self.backend, threads=threads).activate()
        self.max_batch = int(max_batch) if max_batch is not None else (8 if self.backend == "trt" else None)
        self.color, self.letterbox, self.pad_value, self.top_k = color, letterbox, pad_value, int(top_k)
        if getattr(self.preprocess_config, "resize", "stretch") == "letterbox":
            self.letterbox, self.pad_value = True, self.preprocess_config.pad_value
        self.task, self.detection = self._task(cfg, detection)
        self.kernels = self._kernels()
        self._meta = self.runner.get_input_metadata()

    def _task(self, cfg: dict[str, Any], override: DetectSettings | None) -> tuple[str, DetectSettings | None]:
        """``(task, detection settings)``: from the sidecar, or for an artifact from the model it rebuilt."""
        if override is not None and not isinstance(override, DetectSettings):
            raise DeployKitError(f"Engine(detection={override!r}): give a deploykit.DetectSettings(conf=..., iou=..., "
                                 "max_det=...) or None")
        task, det = cfg.get("task"), cfg.get("detection")
        if task is None:  # an artifact directory: the torch runner holds the built model
            built = getattr(self.runner, "built", None)
            task = getattr(built, "task", "classification")
            head = getattr(getattr(built, "exported", None), "output_format", None)
            det = {"head": head} if task == "detection" and head is not None else None
        if task != "detection":
            if override is not None:
                raise DeployKitError(f"Engine(detection=...): {self.path} is a {task} model, not a detector")
            return task, None
        if det is None:
            return task, None  # a detector whose output the Engine cannot read (e.g. backbone + FPN features)
        settings = {k: v for k, v in det.items() if k != "head"}
        return task, override or DetectSettings(**settings)

    def _kernels(self):
        from deploykit import kernels

        if self.backend == "trt":
            return kernels.backend("cuda")
        return kernels.cpu_backend()

    # -- raw tensors -----------------------------------------------------------------
    def __call__(self, inputs: np.ndarray | dict[str, np.ndarray]) -> np.ndarray | dict[str, np.ndarray]:
        """Run raw tensors: an array (the single input) → the output array; a dict → a dict."""
        if isinstance(inputs, dict):
            return self.runner.infer(inputs)
        return self.runner.infer({self.input_name: inputs})[self.output_name]

    # -- images ----------------------------------------------------------------------
    def _valid_images(self, plural: bool = True) -> str:
        """What :meth:`predict` accepts, for messages."""
        c = self.preprocess_config.channels
        # The kernels feed a 3-channel model from gray (repeated) and RGBA (alpha dropped) images too.
        channels = "1, 3 or 4 channels" if c == 3 else f"{c} channel{'s' if c != 1 else ''}"
        what = "uint8 HWC images or NHWC batches" if plural else "uint8 HWC images"
        return f"{what} with {channels} (the model takes {c}-channel input) and height and width >= 1"

    def _check_image(self, arr: np.ndarray, where: str, batch: bool) -> None:
        """Refuse an array the kernels cannot take, naming what it is and what is valid."""
        c = self.preprocess_config.channels
        ok_channels = (1, 3, 4) if c == 3 else (c,)
        ok = (arr.dtype == np.uint8 and arr.ndim in ((3, 4) if batch else (3,))
              and arr.shape[-1] in ok_channels and arr.shape[-3] >= 1 and arr.shape[-2] >= 1)
        if not ok:
            raise DeployKitError(f"{where}: got a {arr.dtype} array of shape {arr.shape}; "
                                 f"valid: {self._valid_images(batch)}")
        if arr.ndim == 4 and arr.shape[0] == 0:
            raise DeployKitError(f"{where}: got an empty batch (shape {arr.shape}); give at least one image")

    def preprocess(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """uint8 HWC image(s) → the model's input batch (NCHW, normalized).

        Raises:
            DeployKitError: ``images`` is not a uint8 HWC image, an NHWC batch of at least one
                image or a non-empty list of HWC images, with a channel count the model takes.
        """
        dtype = np.dtype(self._meta[self.input_name].dtype).name
        if isinstance(images, np.ndarray):
            self._check_image(images, "images", batch=True)
            return self.kernels.preprocess(images, self.preprocess_config, dtype, self.color, self.letterbox, self.pad_value)
        if not isinstance(images, (list, tuple)):
            given = "None" if images is None else f"a {type(images).__name__}"
            raise DeployKitError(f"images: got {given}; valid: {self._valid_images()}, or a list of uint8 HWC images")
        if not images:
            raise DeployKitError("predict() got an empty list of images; give at least one image")
        for i, im in enumerate(images):
            if not isinstance(im, np.ndarray):
                raise DeployKitError(f"images[{i}]: got {'None' if im is None else 'a ' + type(im).__name__}; "
                                     f"valid: {self._valid_images(plural=False)}")
            self._check_image(im, f"images[{i}]", batch=False)
        # Images of different sizes: each resized on its own, then stacked.
        return np.concatenate([self.kernels.preprocess(im, self.preprocess_config, dtype, self.color,
                                                       self.letterbox, self.pad_value) for im in images])

    def predict(self, images: np.ndarray | Sequence[np.ndarray],
                k: int | None = None) -> Prediction | list[Prediction] | Detections | list[Detections]:
        """Classify uint8 HWC images: one image → a :class:`Prediction`; a batch (NHWC
        array or a list of images of any sizes) → a list of them. A detector gives
        :class:`Detections` instead, boxes in each image's own pixels.

        Args:
            images: one HWC image, an NHWC batch, or a list of HWC images (sizes may differ).
            k: classes per image, best first (default: the Engine's ``top_k``; at most the
                model's class count).

        Raises:
            DeployKitError: bad images or ``k`` (see :meth:`preprocess`), or a model whose output
                is not ``[batch, classes]``.
        """
        if self.task == "detection":
            if k is not None:
                raise DeployKitError("predict(k=...) picks classes of a classifier; a detector's limits are "
                                     "Engine(detection=DetectSettings(max_det=..., conf=...))")
            return self._detect(images)
        if k is None:
            k = self.top_k
        elif not _positive_int(k):
            raise DeployKitError(f"predict(k={k!r}): k must be a positive integer (classes per image) or None "
                                 f"(the Engine's top_k, {self.top_k})")
        single = isinstance(images, np.ndarray) and images.ndim == 3
        x = self.preprocess(images)
        step = self.max_batch or len(x)
        logits = np.concatenate([self(x[i : i + step]) for i in range(0, len(x), step)])
        if logits.ndim != 2:
            raise DeployKitError(f"predict() needs a classifier ([batch, classes] output), got {logits.shape}")
        if self.labels is not None and len(self.labels) < logits.shape[1]:
            raise DeployKitError(f"{self.path} gives {len(self.labels)} labels but the model has {logits.shape[1]} "
                                 "outputs; give one label per output (or none)")
        k = min(int(k), logits.shape[1])
        scores, idx = self.kernels.softmax_topk(logits.astype(np.float32, copy=False), k)
        names = self.labels or [str(i) for i in range(logits.shape[1])]
        preds = [Prediction([names[j] for j in row_i], [float(s) for s in row_s], [int(j) for j in row_i])
                 for row_s, row_i in zip(scores, idx)]
        return preds[0] if single else preds

    def _detect(self, images: np.ndarray | Sequence[np.ndarray]) -> Detections | list[Detections]:
        """Letterbox, run, decode + NMS; boxes in each image's own pixels."""
        if self.detection is None:
            raise DeployKitError(f"{self.path} is a detector whose output the Engine cannot decode (its sidecar has no "
                                 "detection block: only YOLO heads exported by deploykit are served); use engine(x) "
                                 "for its raw outputs")
        single = isinstance(images, np.ndarray) and images.ndim == 3
        x = self.preprocess(images)
        sizes = ([images.shape[-3:-1]] * len(x) if isinstance(images, np.ndarray) else [im.shape[:2] for im in images])
        out_h, out_w = self.preprocess_config.size
        geometry = np.float32([geometry_row(letterbox_geometry(h, w, out_h, out_w, self.letterbox), h, w)
                               for h, w in sizes])
        step = self.max_batch or len(x)
        head = np.concatenate([self(x[i : i + step]) for i in range(0, len(x), step)])
        if head.ndim != 3 or head.shape[1] < 5:
            raise DeployKitError(f"{self.path}: a YOLO detector's output is [batch, 4 + classes, anchors], got {head.shape}")
        classes = head.shape[1] - 4
        if self.labels is not None and len(self.labels) != classes:
            raise DeployKitError(f"{self.path} gives {len(self.labels)} labels but the model has {classes} classes; "
                                 "give one label per class (or none)")
        names = self.labels or [str(i) for i in range(classes)]
        found = self.kernels.detect(head.astype(np.float32, copy=False), geometry, self.detection)
        dets = [Detections(d.boxes, d.scores, d.classes, [names[c] for c in d.classes]) for d in found]
        return dets[0] if single else dets

    # -- lifecycle -------------------------------------------------------------------
    def close(self) -> None:
        """Release the runner (and any GPU memory)."""
        self.runner.deactivate()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Engine({str(self.path)!r}, backend={self.backend!r}, input={self.preprocess_config.size})"
