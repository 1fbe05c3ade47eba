"""TensorRT version dispatch, checked against fake 8.6 / 10 / 11 modules; the API names
deploykit uses, checked against the real bindings when they import; no-GPU behaviour."""

from __future__ import annotations

import importlib.util

import pytest

from deploykit.errors import DeployKitError
from deploykit.runtime import trt as dk_trt

import fake_tensorrt


def build(trt, onnx, tmp_path, **cfg):
    return dk_trt.build_engine(onnx, tmp_path / "m.engine", dk_trt.BuildConfig(**cfg), trt=trt)


def calls(trt, name):
    return [c for c in trt.calls if c[0] == name]


@pytest.mark.parametrize(("version", "has_strong", "network_flag", "strong"), [
    ("8.6.1", False, "EXPLICIT_BATCH", False),
    ("10.3.0", True, "STRONGLY_TYPED", True),
    ("11.0.0", True, "STRONGLY_TYPED", True),  # the flag kept (deprecated): set it, harmless
    ("11.0.0", False, None, True),  # the flag gone: every network is strongly typed anyway
], ids=["8.6", "10", "11-with-flag", "11-without-flag"])
def test_network_flags_per_version(small_model, tmp_path, version, has_strong, network_flag, strong):
    trt = fake_tensorrt.make(version, strongly_typed_flag=has_strong)
    info = build(trt, small_model[1], tmp_path)
    (flags,) = [c[1] for c in calls(trt, "create_network")]
    expected = 0 if network_flag is None else 1 << int(getattr(trt.NetworkDefinitionCreationFlag, network_flag))
    assert flags == expected
    assert info["strongly_typed"] is strong and info["tensorrt"] == ".".join(version.split(".")[:2])


@pytest.mark.parametrize(("version", "precision", "flags"), [
    ("8.6.1", "fp32", []),
    ("8.6.1", "fp16", ["FP16"]),
    ("8.6.1", "int8", ["INT8", "FP16"]),
    ("10.3.0", "fp16", []),  # strongly typed: precision comes from the graph, flags would be refused
    ("10.3.0", "int8", []),
    ("11.0.0", "int8", []),  # the flags no longer exist
])
def test_precision_flags_only_where_the_version_is_weakly_typed(small_model, tmp_path, version, precision, flags):
    trt = fake_tensorrt.make(version)
    build(trt, small_model[1], tmp_path, precision=precision)
    assert [c[1].name for c in calls(trt, "set_flag")] == flags


def test_profile_workspace_and_timing_cache(small_model, tmp_path):
    trt = fake_tensorrt.make("10.3.0")
    cache = tmp_path / "timing.cache"
    info = build(trt, small_model[1], tmp_path, batch=(1, 4, 16), workspace=123456, timing_cache=cache)
    assert calls(trt, "set_shape") == [("set_shape", "input", (1, 3, 32, 32), (4, 3, 32, 32), (16, 3, 32, 32))]
    assert calls(trt, "set_memory_pool_limit") == [("set_memory_pool_limit", trt.MemoryPoolType.WORKSPACE, 123456)]
    assert calls(trt, "create_timing_cache") == [("create_timing_cache", b"")]
    saved = cache.read_bytes()
    assert saved.startswith(fake_tensorrt.CACHE_MAGIC) and (tmp_path / "m.engine").is_file()
    # A second build starts from the saved timings.
    trt2 = fake_tensorrt.make("10.3.0")
    build(trt2, small_model[1], tmp_path, timing_cache=cache)
    assert calls(trt2, "create_timing_cache") == [("create_timing_cache", saved)]
    assert info["batch_profile"] == [1, 4, 16]


def test_failed_build_writes_nothing(small_model, tmp_path, monkeypatch):
    trt = fake_tensorrt.make("10.3.0")
    monkeypatch.setattr(trt.Builder, "fail", True)
    with pytest.raises(DeployKitError, match="failed to build"):
        build(trt, small_model[1], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unparsable_onnx_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(DeployKitError, match="cannot parse"):
        build(fake_tensorrt.make("10.3.0"), bad, tmp_path)


def test_bad_batch_profile(small_model, tmp_path):
    with pytest.raises(DeployKitError, match="min <= opt <= max"):
        build(fake_tensorrt.make("10.3.0"), small_model[1], tmp_path, batch=(4, 1, 8))


@pytest.mark.parametrize("version", ["8.4.3", "7.2.0"])
def test_too_old_tensorrt_is_refused(version):
    with pytest.raises(DeployKitError, match="too old"):
        dk_trt.features(fake_tensorrt.make(version))


@pytest.mark.parametrize("version", ["8.5.2", "8.6.1", "10.3.0", "11.0.0"])
def test_fake_modules_provide_every_name_deploykit_uses(version):
    # Keeps the fake honest: if deploykit starts calling a new name, API_NAMES must list it.
    assert dk_trt.missing_api(fake_tensorrt.make(version)) == []


def test_missing_api_notices_a_removed_name():
    trt = fake_tensorrt.make("10.3.0")
    del trt.IExecutionContext.execute_async_v3
    assert "IExecutionContext.execute_async_v3" in dk_trt.missing_api(trt)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="tensorrt is not installed here")
def test_api_names_exist_in_the_real_bindings():
    import tensorrt  # importing is safe without a GPU; creating a Runtime is not

    assert dk_trt.missing_api(tensorrt) == []


def test_without_a_gpu_trt_is_a_one_line_error_naming_the_onnx(small_model):
    if dk_trt.trt_status().ok:
        pytest.skip("a GPU and TensorRT are present")
    with pytest.raises(DeployKitError, match=f"needs a CUDA GPU.*the ONNX file is {small_model[1]}") as e:
        dk_trt.require_gpu(small_model[1])
    assert "\n" not in str(e.value)
    with pytest.raises(DeployKitError, match="needs a CUDA GPU"):
        dk_trt.TrtRunner(small_model[1]).activate()


def test_auto_backend_falls_back_to_onnx_runtime_without_tensorrt(small_model, tmp_path):
    from deploykit.runtime.backends import auto_backend

    if dk_trt.trt_status().ok:
        pytest.skip("a GPU and TensorRT are present")
    assert auto_backend(small_model[1]) == "ort"
    assert auto_backend(tmp_path / "m.engine") == "trt"
    assert auto_backend("cifar:resnet20") == "torch"


def test_runner_on_fake_11_reads_engine_files(small_model, tmp_path):
    trt = fake_tensorrt.make("11.0.0")
    engine = tmp_path / "m.engine"
    dk_trt.build_engine(small_model[1], engine, trt=trt)
    import numpy as np

    with dk_trt.TrtRunner(engine, trt=trt, cuda=fake_tensorrt.FakeCuda()) as r:
        assert r.infer({"input": np.zeros((2, 3, 32, 32), np.float32)})["output"].shape == (2, 10)
