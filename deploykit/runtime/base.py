"""The Runner interface: one way to run a model whatever the backend.

As in Polygraphy, every public method checks its arguments and the runner's state,
then calls the backend's ``*_impl``; backends never repeat the checks. A runner is
loaded by :meth:`Runner.activate` (or ``with runner:``) and is safe to call from
several threads at once (each backend says how it achieves that). Backends are found by
name in :mod:`deploykit.runtime.backends`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deploykit.errors import DeployKitError


@dataclass(frozen=True)
class TensorMeta:
    """Name, dtype and shape of one input or output; ``None`` marks a dynamic dimension."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"name": self.name, "dtype": str(np.dtype(self.dtype)), "shape": list(self.shape)}

    def concrete_shape(self, batch: int) -> tuple[int, ...]:
        """A shape to feed: ``batch`` first, 1 for any other dynamic dimension."""
        return tuple(batch if i == 0 else (1 if d is None else d) for i, d in enumerate(self.shape))


class Runner(abc.ABC):
    """A loaded model: ``infer({name: array}) -> {name: array}`` plus I/O metadata."""

    backend: str = ""

    def __init__(self) -> None:
        self.is_active = False

    # -- lifecycle -------------------------------------------------------------------
    def activate(self) -> Runner:
        """Load the model (idempotent); returns self."""
        if not self.is_active:
            self.activate_impl()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        """Release the model and any device memory (idempotent)."""
        if self.is_active:
            self.deactivate_impl()
            self.is_active = False

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    # -- metadata --------------------------------------------------------------------
    def get_input_metadata(self) -> dict[str, TensorMeta]:
        """Inputs by name, in the model's order."""
        self._require_active()
        return self.get_input_metadata_impl()

    def get_output_metadata(self) -> dict[str, TensorMeta]:
        """Outputs by name, in the model's order."""
        self._require_active()
        return self.get_output_metadata_impl()

    # -- inference -------------------------------------------------------------------
    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on ``feed`` (every input, by name) and return every output.

        Raises:
            DeployKitError: inactive runner, missing or unexpected inputs, wrong dtype,
                rank or static dimension.
        """
        self._require_active()
        self.check_feed(feed)
        return self.infer_impl(feed)

    def check_feed(self, feed: dict[str, np.ndarray]) -> None:
        """Validate ``feed`` against the input metadata."""
        meta = self.get_input_metadata_impl()
        if not isinstance(feed, dict):
            raise DeployKitError(f"infer() takes a dict of input name -> array, got {type(feed).__name__}")
        missing, extra = [n for n in meta if n not in feed], [n for n in feed if n not in meta]
        if missing or extra:
            raise DeployKitError(
                f"inputs do not match the model: missing {missing}, unexpected {extra}; expected {list(meta)}"
            )
        for name, m in meta.items():
            arr = feed[name]
            if not isinstance(arr, np.ndarray):
                raise DeployKitError(f"input {name!r} must be a numpy array, got {type(arr).__name__}")
            if arr.dtype != m.dtype:
                raise DeployKitError(f"input {name!r} has dtype {arr.dtype}, the model expects {np.dtype(m.dtype)}")
            if arr.ndim != len(m.shape) or any(d is not None and d != s for d, s in zip(m.shape, arr.shape)):
                want = "x".join("?" if d is None else str(d) for d in m.shape)
                raise DeployKitError(f"input {name!r} has shape {'x'.join(map(str, arr.shape))}, the model expects {want}")

    def _require_active(self) -> None:
        if not self.is_active:
            raise DeployKitError(f"{type(self).__name__} is not active: call activate() or use it in a with block")

    # -- backend hooks ---------------------------------------------------------------
    @abc.abstractmethod
    def activate_impl(self) -> None: ...

    def deactivate_impl(self) -> None:
        """Release resources (default: nothing to release)."""

    @abc.abstractmethod
    def get_input_metadata_impl(self) -> dict[str, TensorMeta]: ...

    @abc.abstractmethod
    def get_output_metadata_impl(self) -> dict[str, TensorMeta]: ...

    @abc.abstractmethod
    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


NP_FROM_ONNX = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}


def onnx_path_of(path: str | Path) -> Path:
    """An ONNX file, or the ``model.onnx`` inside a bundle directory."""
    p = Path(path)
    if p.is_dir() and (p / "model.onnx").is_file():
        return p / "model.onnx"
    if p.suffix != ".onnx":
        raise DeployKitError(f"{path} is not an .onnx file or a directory with model.onnx")
    if not p.is_file():
        raise DeployKitError(f"ONNX file {path} does not exist")
    return p
