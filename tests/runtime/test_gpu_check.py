"""benchmarks/gpu_check.py's measuring code, run on the CPU through deploykit's real
cuda-python binding class over the fake ``cuda.bindings`` and a fake TensorRT 10."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from deploykit import cuda as dk_cuda
from deploykit.runtime import trt as dk_trt

import fake_cuda
import fake_gpu
import fake_tensorrt

ROOT = Path(__file__).resolve().parents[2]


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_spin_latency_and_agreement_through_cuda_python(monkeypatch, small_model):
    gpu_check = load_script()
    before = fake_gpu.current()
    fake_gpu.use_device(fake_gpu.Device())
    dk_cuda.reset()
    try:
        fake_cuda.install(monkeypatch, fake_cuda.Setup(binding="12.9.4", driver_cuda=12020))
        api = dk_cuda.cuda_api()
        assert api.name == "cuda-python"
        x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
        with dk_trt.TrtRunner(small_model[1], build=dk_trt.BuildConfig(tf32=False), trt=fake_tensorrt.make("10.3.0"),
                              cuda=api) as r:
            stats = gpu_check.spin_latency(r, x, warmup_ms=20, duration_s=0.2)
            out = r.infer({"input": x})["output"]
            assert gpu_check.e2e_latency(r, x, runs=5) > 0
        assert stats["runs"] > 0 and 0 < stats["p50_ms"] <= stats["p99_ms"] and stats["throughput"] > 0
        same = gpu_check.agreement(out, out)
        assert same == {"max_rel_diff": 0.0, "top1_agreement": 100.0}
        assert fake_gpu.current().mem == {}  # every buffer freed through cudaFree
    finally:
        fake_gpu.use_device(before)
        dk_cuda.reset()
