"""ONNX Runtime backend. ``InferenceSession.run`` is thread-safe, so one session serves
every thread."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deploykit.export.session import CPU, ort_session
from deploykit.runtime.base import NP_FROM_ONNX, Runner, TensorMeta, onnx_path_of


def _dim(d: object) -> int | None:
    return d if isinstance(d, int) and d > 0 else None


class OrtRunner(Runner):
    """Run an ONNX file (or a bundle's ``model.onnx``) in ONNX Runtime.

    Args:
        path: the ``.onnx`` file or a directory holding ``model.onnx``.
        threads: intra-op threads (None: ONNX Runtime's default).
        providers: execution providers (default CPU).
    """

    backend = "ort"

    def __init__(self, path: str | Path, threads: int | None = None, providers: list[str] | None = None) -> None:
        super().__init__()
        self.path = onnx_path_of(path)
        self.threads = threads
        self.providers = providers or [CPU]
        self.session = None

    def activate_impl(self) -> None:
        # Other providers (e.g. CUDAExecutionProvider: onnxruntime-gpu, for comparisons against
        # TensorRT) open through the same loader as the CPU one.
        self.session = ort_session(self.path, self.threads, self.providers)
        self._inputs = {i.name: TensorMeta(i.name, np.dtype(NP_FROM_ONNX[i.type]), tuple(_dim(d) for d in i.shape))
                        for i in self.session.get_inputs()}
        self._outputs = {o.name: TensorMeta(o.name, np.dtype(NP_FROM_ONNX[o.type]), tuple(_dim(d) for d in o.shape))
                         for o in self.session.get_outputs()}

    def deactivate_impl(self) -> None:
        self.session = None

    def get_input_metadata_impl(self) -> dict[str, TensorMeta]:
        return self._inputs

    def get_output_metadata_impl(self) -> dict[str, TensorMeta]:
        return self._outputs

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(None, feed)
        return dict(zip(self._outputs, outs))
