"""On a real GPU with TensorRT (``pytest -m gpu``; ``benchmarks/gpu_check.sh`` runs these
first): what the fakes stand in for, checked against the real thing. Each test skips with
the reason when no GPU or no TensorRT is usable here."""

from __future__ import annotations

import numpy as np
import pytest

from deploykit.errors import DeployKitError
from deploykit.runtime import trt as dk_trt

_STATUS = dk_trt.trt_status()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _STATUS.ok, reason=f"needs a GPU with TensorRT: {_STATUS.reason}")]


def x(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype(np.float32)


def test_the_binding_found_reaches_the_device():
    from deploykit.cuda import cuda_api, gpu_status

    api = cuda_api()
    assert gpu_status().binding == api.name
    major, _ = api.compute_capability(0)
    assert major >= 5 and api.device_name(0)
    s = api.stream()
    ptr = api.malloc(64)
    a = np.arange(16, dtype=np.float32)
    b = np.empty_like(a)
    api.htod(ptr, a, s)
    api.dtoh(b, ptr, s)
    api.synchronize(s)
    api.free(ptr)
    api.destroy_stream(s)
    np.testing.assert_array_equal(a, b)


def test_real_tensorrt_has_every_name_deploykit_calls():
    import tensorrt

    assert dk_trt.missing_api(tensorrt) == []


def test_pool_of_contexts_alternates_and_batch_outside_the_profile_is_refused(small_model, tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYKIT_CACHE", str(tmp_path))
    with dk_trt.TrtRunner(small_model[1], contexts=3, build=dk_trt.BuildConfig(tf32=False)) as r:
        outs = [r.infer({"input": x(2, seed=i % 2)})["output"] for i in range(6)]  # every slot, twice
        np.testing.assert_array_equal(outs[0], outs[2])
        np.testing.assert_array_equal(outs[1], outs[3])
        with pytest.raises(DeployKitError, match="optimization profile"):
            r.infer({"input": x(16)})
        engine = r.engine
    assert r.engine is None and engine is not None


def test_tf32_default_build_differs_from_the_parity_build_only_by_rounding(small_model, tmp_path):
    import torch

    inp = x(4, seed=3)
    with torch.no_grad():
        ref = small_model[0].model(torch.from_numpy(inp)).numpy()
    results = {}
    for tf32 in (True, False):
        engine = tmp_path / f"tf32-{tf32}.engine"
        dk_trt.build_engine(small_model[1], engine, dk_trt.BuildConfig(tf32=tf32))
        with dk_trt.TrtRunner(engine) as r:
            results[tf32] = r.infer({"input": inp})["output"]
    np.testing.assert_allclose(results[False], ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(results[True], ref, rtol=2e-2, atol=2e-2)  # TF32 where the GPU has it


def test_the_timing_cache_is_reused_and_a_foreign_one_is_replaced(small_model, tmp_path):
    cache = tmp_path / "timing.cache"
    dk_trt.build_engine(small_model[1], tmp_path / "a.engine", dk_trt.BuildConfig(timing_cache=cache))
    first = cache.read_bytes()
    assert first
    dk_trt.build_engine(small_model[1], tmp_path / "b.engine", dk_trt.BuildConfig(timing_cache=cache))
    cache.write_bytes(b"\0" * 64)  # damaged: TensorRT refuses it, the build goes on with a fresh cache
    dk_trt.build_engine(small_model[1], tmp_path / "c.engine", dk_trt.BuildConfig(timing_cache=cache))
    assert cache.read_bytes() != b"\0" * 64


def test_nvrtc_compiles_for_this_gpu_and_the_kernels_run_there():
    from deploykit.cuda import cuda_api
    from deploykit.kernels import device, nvrtc

    status = nvrtc.probe()
    if not status.ok:
        pytest.skip(f"NVRTC is not usable: {status.reason}")
    major, minor = cuda_api().compute_capability(0)
    if major * 10 + minor not in status.archs:
        pytest.skip(f"this NVRTC cannot target sm_{major}{minor}")
    assert isinstance(device.kernels(), device.DeviceKernels)
