"""Which CUDA binding reaches the GPU, pycuda's per-thread contexts, and NVRTC that is
missing or cannot target the device, against fake ``cuda.bindings`` and ``pycuda``
modules that behave as the real ones do (issue 14, part 1: defects 1, 5, 6, 8)."""

from __future__ import annotations

import logging
import threading
import tomllib
from pathlib import Path

import numpy as np
import pytest

from deploykit.errors import DeployKitError
from deploykit import cuda as dk_cuda
from deploykit.runtime import trt as dk_trt

import fake_cuda
import fake_gpu
import fake_pycuda
import fake_tensorrt

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fresh_probes():
    """Every probe cached by deploykit is forgotten before and after each test."""
    from deploykit.kernels import device, nvrtc

    def clear():
        dk_cuda.reset()
        dk_trt.trt_status.cache_clear()
        nvrtc.probe.cache_clear()
        device.kernels.cache_clear()

    clear()
    before = fake_gpu.current()
    fake_gpu.use_device(fake_gpu.Device())
    yield
    fake_gpu.use_device(before)
    clear()


# -- defect 1: a cuda-bindings newer than the driver -----------------------------------------
def test_a_driver_older_than_the_binding_is_named_with_the_fix(monkeypatch):
    fake_cuda.install(monkeypatch, fake_cuda.Setup(binding="13.0.2", driver_cuda=12020))
    status = dk_cuda.gpu_status()
    assert not status.ok
    assert "driver supports CUDA 12.2 but cuda-python 13.0.2 needs CUDA 13.0" in status.reason
    assert "deploykit[gpu-cu12]" in status.reason and "no CUDA device found" not in status.reason
    with pytest.raises(DeployKitError, match="supports CUDA 12.2"):
        dk_cuda.cuda_api()


def test_pycuda_is_tried_when_cuda_python_cannot_reach_the_driver(monkeypatch):
    fake_cuda.install(monkeypatch, fake_cuda.Setup(binding="13.0.2", driver_cuda=12020), pycuda=True)
    fake_pycuda.install(monkeypatch)
    status = dk_cuda.gpu_status()
    assert status.ok and status.binding == "pycuda"
    assert dk_cuda.cuda_api().name == "pycuda"


def test_a_matching_binding_finds_the_device(monkeypatch):
    fake_cuda.install(monkeypatch, fake_cuda.Setup(binding="12.9.4", driver_cuda=12020))
    status = dk_cuda.gpu_status()
    assert status.ok and status.binding == "cuda-python" and "via cuda-python 12.9.4" in status.reason
    api = dk_cuda.cuda_api()
    assert api.compute_capability() == (8, 7) and api.device_name() == "NVIDIA Jetson AGX Orin"


def test_no_driver_and_no_device_are_told_apart(monkeypatch):
    fake_cuda.install(monkeypatch, fake_cuda.Setup(driver_cuda=0))
    assert "no NVIDIA driver found" in dk_cuda.gpu_status().reason
    dk_cuda.reset()
    fake_cuda.install(monkeypatch, fake_cuda.Setup(devices=[]))
    assert "no CUDA device found" in dk_cuda.gpu_status().reason


def test_extras_per_cuda_major_pin_the_binding_and_bring_nvrtc():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    cu12, cu13 = " ".join(extras["gpu-cu12"]), " ".join(extras["gpu-cu13"])
    assert "cuda-python[all]>=12.6,<13" in cu12 and "tensorrt-cu12" in cu12
    assert "cuda-python[all]>=13,<14" in cu13 and "tensorrt-cu13" in cu13
    assert extras["gpu"] == ["deploykit[gpu-cu13]"]  # PyPI's torch wheels are CUDA 13 builds


def test_cuda_python_streams_are_destroyed_once(monkeypatch):
    fake_cuda.install(monkeypatch, fake_cuda.Setup(binding="12.9.4", driver_cuda=12020))
    api = dk_cuda.cuda_api()
    s = api.stream()
    api.destroy_stream(s)
    with pytest.raises(DeployKitError, match="cudaStreamDestroy failed"):
        api.destroy_stream(s)


# -- defect 5: pycuda's contexts are per thread ----------------------------------------------
def test_trt_runner_on_pycuda_leaves_no_context_pushed_and_serves_threads(monkeypatch, small_model):
    fake_cuda.hide(monkeypatch)
    fake_pycuda.install(monkeypatch)
    api = dk_cuda.cuda_api()
    assert api.name == "pycuda" and fake_pycuda.main_thread_stack() == []
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    runner = dk_trt.TrtRunner(small_model[1], build=dk_trt.BuildConfig(tf32=False), trt=fake_tensorrt.make("8.6.1"),
                              cuda=api)
    with runner:
        ref = runner.infer({"input": x})["output"]
        assert fake_pycuda.main_thread_stack() == []
        outs, errors = [], []

        def work():
            try:
                outs.append(runner.infer({"input": x})["output"])
            except BaseException as e:  # noqa: BLE001 - surfaced below
                errors.append(e)

        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors and len(outs) == 3 and all(np.array_equal(o, ref) for o in outs)
    import gc

    gc.collect()
    assert fake_pycuda.main_thread_stack() == [] and fake_pycuda.ABORTS == []  # pycuda would not abort at exit


def test_pycuda_probe_pushes_nothing(monkeypatch):
    fake_cuda.hide(monkeypatch)
    fake_pycuda.install(monkeypatch)
    assert dk_cuda.gpu_status().ok
    assert fake_pycuda.main_thread_stack() == []


# -- defect 6: NVRTC missing (it fails at the first call, not at import) ---------------------
def test_missing_nvrtc_falls_back_to_the_host_kernels_with_one_line(monkeypatch, caplog):
    fake_cuda.install(monkeypatch, fake_cuda.Setup(binding="12.9.4", driver_cuda=12020, nvrtc=False))
    from deploykit.kernels import backend, device, nvrtc
    from deploykit.zoo.base import Preprocess

    import deploykit.kernels.nvrtc  # noqa: F401 - importing works without libnvrtc

    status = nvrtc.probe()
    assert not status.ok and "Failed to dlopen libnvrtc" in status.reason and "gpu-cu12" in status.reason
    imgs = np.random.default_rng(0).integers(0, 256, (2, 40, 48, 3), dtype=np.uint8)
    pre = Preprocess(size=(32, 32))
    with caplog.at_level(logging.WARNING):
        out = backend("cuda").preprocess(imgs, pre)
        backend("cuda").softmax_topk(np.zeros((1, 10), np.float32), 3)
    np.testing.assert_array_equal(out, backend("host").preprocess(imgs, pre))
    lines = [r for r in caplog.records if "CUDA kernels unavailable" in r.getMessage()]
    assert len(lines) == 1 and device.kernels() is not None


# -- defect 8: NVRTC 13 cannot target Xavier's sm_72 -----------------------------------------
def test_nvrtc_13_refuses_sm72_naming_what_it_targets_and_the_way_out(monkeypatch, tmp_path):
    monkeypatch.setenv("DEPLOYKIT_CACHE", str(tmp_path))
    fake_cuda.install(monkeypatch, fake_cuda.Setup(binding="13.0.2", driver_cuda=13000))
    from deploykit.kernels import nvrtc

    with pytest.raises(DeployKitError, match=r"NVRTC 13\.0 cannot target sm_72 \(it targets sm_75, .*run\.sh"):
        nvrtc.compile_cubin("preprocess.cu", 72)
    cubin, cached = nvrtc.compile_cubin("preprocess.cu", 87)
    assert not cached


def test_device_kernels_on_xavier_with_nvrtc_13_fall_back(monkeypatch, caplog):
    fake_gpu.use_device(fake_gpu.Device("NVIDIA Jetson AGX Xavier", (7, 2)))
    fake_cuda.install(monkeypatch, fake_cuda.Setup(binding="13.0.2", driver_cuda=13000))
    from deploykit.kernels import device

    with caplog.at_level(logging.WARNING):
        k = device.kernels()
    assert not isinstance(k, device.DeviceKernels) and "cannot target sm_72" in caplog.text
