"""PyTorch backend: the model itself (a spec or an artifact directory), on the CPU.

Inference runs under ``torch.inference_mode`` (thread-local), and an eval-mode model
holds no per-call state, so several threads may call it at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from deploykit.export.onnx import INPUT_NAME, OUTPUT_NAME
from deploykit.runtime.base import Runner, TensorMeta


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """PyTorch's intra-op thread count set to ``n`` inside the block (None: left as it is).

    The count is process-wide, so it is set around the calls and then restored.
    """
    import torch

    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class TorchRunner(Runner):
    """Run a model built from a MODEL spec or artifact directory.

    Args:
        model: a MODEL spec (``cifar:resnet20``) or an artifact directory.
        weights: optional weights file.
        built: an already built :class:`~deploykit.zoo.base.BuiltModel` (then ``model``
            is only a label).
    """

    backend = "torch"

    def __init__(self, model: str | Path, weights: str | None = None, built=None) -> None:
        super().__init__()
        self.spec, self.weights, self.built = str(model), weights, built

    def activate_impl(self) -> None:
        import torch

        from deploykit.zoo import build_model

        if self.built is None:
            self.built = build_model(self.spec, weights=self.weights)
        # What export writes (a classifier itself; a YOLO detector's decoded head), so this runner
        # and ONNX Runtime run the same function.
        self.model = self.built.exported.eval()
        shape = (None, *self.built.input_shape[1:])
        with torch.inference_mode():
            out = self.model(self.built.example_input(1))
        self._inputs = {INPUT_NAME: TensorMeta(INPUT_NAME, np.dtype(np.float32), shape)}
        self._outputs = {OUTPUT_NAME: TensorMeta(OUTPUT_NAME, np.dtype(np.float32), (None, *out.shape[1:]))}

    def deactivate_impl(self) -> None:
        self.model = None

    def get_input_metadata_impl(self) -> dict[str, TensorMeta]:
        return self._inputs

    def get_output_metadata_impl(self) -> dict[str, TensorMeta]:
        return self._outputs

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self.model(torch.from_numpy(feed[INPUT_NAME]))
        return {OUTPUT_NAME: out.numpy().copy()}
