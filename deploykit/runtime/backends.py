"""The backends a model runs on, by name: the one registry every runtime user looks up.

The benchmark, the evaluation, the Engine and the CLI's ``--backend`` open runners
through :data:`BACKENDS`; the latency tables find their timers in the same records (the
bench layer registers them there, see :mod:`deploykit.bench.latency_table.timers`). A record names its
runner as ``"module:Class"`` so that naming one backend imports only that one.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploykit.registry import Registry, View, resolve
from deploykit.runtime.base import Runner
from deploykit.runtime.trt import trt_status


@dataclass
class Backend:
    """One way to run a model.

    Attributes:
        description: what it is, in a few words (every ``--backend`` help lists it).
        runner: ``"module:Class"`` of its :class:`~deploykit.runtime.base.Runner` (None: a
            backend that only times layers, e.g. a test's fake).
        runner_threads: the runner takes ``threads=`` (a per-session setting).
        thread_scope: ``"module:function"`` of a context manager that sets a process-wide thread
            count around calls (PyTorch's), for runners that take none themselves.
        host_memory: its memory is the process's resident set (what the memory benchmark
            measures); False for GPU backends.
        timer: its latency timer class (:class:`deploykit.bench.latency_table.timers.Timer`), registered by
            the bench layer above this one; None where layers are not timed.
    """

    description: str = ""
    runner: str | None = None
    runner_threads: bool = False
    thread_scope: str | None = None
    host_memory: bool = False
    timer: type | None = None

    @property
    def takes_threads(self) -> bool:
        """Whether a thread count means anything to it."""
        return self.runner_threads or self.thread_scope is not None

    def runner_class(self) -> type[Runner]:
        """Its Runner class (imports that backend's module); only for backends with a runner (:data:`RUNNERS`)."""
        assert self.runner is not None, "a timer-only backend has no runner"
        return resolve(self.runner)

    def open(self, path: str | Path, threads: int | None = None, **kwargs: Any) -> Runner:
        """Create (not yet activate) its runner for ``path``; ``threads`` goes to runners that take it."""
        if self.runner_threads and threads:
            kwargs["threads"] = threads
        return self.runner_class()(path, **kwargs)

    def threads(self, n: int | None) -> contextlib.AbstractContextManager[None]:
        """A context that applies ``n`` threads process-wide where the backend needs that (else nothing)."""
        return resolve(self.thread_scope)(n) if self.thread_scope else contextlib.nullcontext()


BACKENDS: Registry[Backend] = Registry("backend")
BACKENDS.register("torch", Backend("PyTorch", "deploykit.runtime.torch:TorchRunner",
                                   thread_scope="deploykit.runtime.torch:torch_threads", host_memory=True))
BACKENDS.register("ort", Backend("ONNX Runtime, CPU", "deploykit.runtime.ort:OrtRunner", runner_threads=True,
                                 host_memory=True))
BACKENDS.register("trt", Backend("TensorRT, needs a CUDA GPU", "deploykit.runtime.trt:TrtRunner"))

# The backends that run whole models (what bench, eval and the Engine accept).
RUNNERS: View[Backend] = View("backend", BACKENDS, lambda b: b if b.runner else None)


def describe(name: str) -> str:
    """``"ort (ONNX Runtime, CPU)"``, or the bare name of a backend without a description."""
    desc = BACKENDS.get(name).description if name in BACKENDS else ""
    return f"{name} ({desc})" if desc else name


def runner_class(backend: str) -> type[Runner]:
    """The Runner class registered as ``backend``."""
    return RUNNERS.get(backend).runner_class()


def auto_backend(path: str | Path) -> str:
    """``trt`` for an engine file, or for ONNX when a GPU and TensorRT are present;
    ``torch`` for an artifact directory or model spec; else ``ort``."""
    p = Path(path)
    if p.suffix in (".engine", ".plan"):
        return "trt"
    if p.suffix == ".onnx":
        return "trt" if trt_status().ok else "ort"
    if p.is_dir() and (p / "model.onnx").is_file():
        return "trt" if trt_status().ok else "ort"
    return "torch"


def load_runner(path: str | Path, backend: str = "auto", threads: int | None = None, **kwargs: Any) -> Runner:
    """Create (not yet activate) the runner for ``path``: an ONNX file, an engine file,
    an artifact or bundle directory, or a model spec.

    Args:
        path: what to run.
        backend: a registered backend, or ``auto`` (:func:`auto_backend`).
        threads: intra-op threads, for backends whose runner takes them (ignored by the others).
        **kwargs: the runner's own options (e.g. TensorRT's ``build``).
    """
    name = auto_backend(path) if backend == "auto" else backend
    return RUNNERS.get(name).open(path, threads, **kwargs)
