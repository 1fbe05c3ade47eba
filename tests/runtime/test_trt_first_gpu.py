"""What would break the first real TensorRT run (issue 14, part 1), each against the fakes
that now refuse what TensorRT refuses: per-context optimization profiles on 8.x, shapes
outside the profile, TF32 in FP32 parity builds, timing caches and engines from another
GPU, and contexts and streams left alive after deactivate."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

from deploykit.errors import DeployKitError
from deploykit.runtime import trt as dk_trt

import fake_gpu
import fake_tensorrt


def x(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype(np.float32)


def runner(onnx, version="8.6.1", **kw):
    kw.setdefault("build", dk_trt.BuildConfig(tf32=False))
    trt = kw.pop("trt", None) or fake_tensorrt.make(version)
    return dk_trt.TrtRunner(onnx, trt=trt, cuda=kw.pop("cuda", None) or fake_gpu.FakeCuda(), **kw)


@pytest.fixture
def device():
    """A fresh fake GPU for the test, the default one restored after."""
    before = fake_gpu.current()
    dev = fake_gpu.use_device(fake_gpu.Device())
    yield dev
    fake_gpu.use_device(before)


# -- defect 2: TensorRT 8.x gives profile 0 to the first context only ----------------------
@pytest.mark.parametrize("version", ["8.5.2", "8.6.1", "10.3.0", "11.0.0"])
def test_every_pool_slot_runs_on_its_own_profile(small_model, device, version):
    with runner(small_model[1], version, contexts=3) as r:
        outs = [r.infer({"input": x(2, seed=i)})["output"] for i in range(6)]  # round-robin over the slots
        profiles = sorted(s.context.active_optimization_profile for s in r._slots)
        assert profiles == ([0, 1, 2] if version.startswith("8.") else [0, 0, 0])
        assert r.engine.num_optimization_profiles == (3 if version.startswith("8.") else 1)
    assert all(o.shape == (2, 10) for o in outs)


def test_an_8x_engine_with_one_profile_runs_one_call_at_a_time(small_model, device, tmp_path, caplog):
    trt = fake_tensorrt.make("8.6.1")
    engine = tmp_path / "m.engine"
    dk_trt.build_engine(small_model[1], engine, dk_trt.BuildConfig(tf32=False), trt=trt)  # trtexec-style: 1 profile
    with caplog.at_level(logging.WARNING), runner(engine, trt=trt, contexts=2) as r:
        assert len(r._slots) == 1
        for i in range(3):
            assert r.infer({"input": x(1, seed=i)})["output"].shape == (1, 10)
    assert "at most that many calls at once" in caplog.text


def test_threads_share_an_8x_pool(small_model, device):
    with runner(small_model[1], "8.6.1", contexts=2) as r:
        ref = r.infer({"input": x(1, seed=5)})["output"]
        results, errors = [], []

        def work():
            try:
                for _ in range(4):
                    results.append(r.infer({"input": x(1, seed=5)})["output"])
            except BaseException as e:  # noqa: BLE001 - surfaced below
                errors.append(e)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors and len(results) == 16
    for out in results:
        np.testing.assert_array_equal(out, ref)


# -- defect 3: set_input_shape returns False outside the profile ----------------------------
def test_batch_outside_the_profile_is_a_user_error(small_model, device):
    with runner(small_model[1], "10.3.0") as r:
        with pytest.raises(DeployKitError, match=r"batch 16, outside the engine's optimization profile \(1\.\.8\)"):
            r.infer({"input": x(16)})
        assert r.infer({"input": x(8)})["output"].shape == (8, 10)  # the slot is still usable


def test_a_refused_input_shape_is_a_user_error_not_a_numpy_error(small_model, device):
    with runner(small_model[1], "8.6.1") as r:
        r._batch_range = {"input": (1, 64)}  # as if the engine's profile were misread: TensorRT's own check remains
        with pytest.raises(DeployKitError, match="TensorRT refused shape 16x3x32x32"):
            r.infer({"input": x(16)})


# -- defect 4: TF32 is on by default for FP32 builds ---------------------------------------
def test_fp32_builds_keep_tf32_unless_a_parity_build_asks(small_model, device, tmp_path):
    trt = fake_tensorrt.make("10.3.0")
    dk_trt.build_engine(small_model[1], tmp_path / "a.engine", trt=trt)
    assert not [c for c in trt.calls if c[0] == "clear_flag"]  # deployment: TensorRT's default, TF32 on
    info = dk_trt.build_engine(small_model[1], tmp_path / "b.engine", dk_trt.BuildConfig(tf32=False), trt=trt)
    assert ("clear_flag", trt.BuilderFlag.TF32) in trt.calls and info["tf32"] is False
    import torch

    inp = x(2, seed=3)
    with torch.no_grad():
        ref = small_model[0].model(torch.from_numpy(inp)).numpy()
    with runner(tmp_path / "a.engine", trt=trt, build=None) as r:
        tf32 = r.infer({"input": inp})["output"]
    with runner(tmp_path / "b.engine", trt=trt, build=None) as r:
        exact = r.infer({"input": inp})["output"]
    np.testing.assert_allclose(exact, ref, rtol=1e-4, atol=1e-4)
    assert np.abs(tf32 - ref).max() > 1e-3  # what the conformance test would have met on an Ampere GPU


# -- defect 7: timing caches and engines are bound to a device ------------------------------
def test_a_timing_cache_from_another_gpu_starts_a_fresh_one(small_model, tmp_path, caplog):
    cache = tmp_path / "timing.cache"
    before = fake_gpu.current()
    try:
        fake_gpu.use_device(fake_gpu.Device("NVIDIA GeForce RTX 3090", (8, 6)))
        dk_trt.build_engine(small_model[1], tmp_path / "a.engine", dk_trt.BuildConfig(timing_cache=cache),
                            trt=fake_tensorrt.make("10.3.0"))
        foreign = cache.read_bytes()
        fake_gpu.use_device(fake_gpu.Device("NVIDIA Jetson AGX Orin", (8, 7)))
        trt = fake_tensorrt.make("10.3.0")
        with caplog.at_level(logging.WARNING):
            dk_trt.build_engine(small_model[1], tmp_path / "b.engine", dk_trt.BuildConfig(timing_cache=cache), trt=trt)
    finally:
        fake_gpu.use_device(before)
    assert ("ERROR", "The timing cache was generated on a device with different CUDA device properties") in trt.log
    assert "does not fit this GPU" in caplog.text
    assert cache.read_bytes() != foreign and b"Jetson AGX Orin" in cache.read_bytes()


def test_a_damaged_timing_cache_is_replaced(small_model, device, tmp_path):
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"not a timing cache")
    dk_trt.build_engine(small_model[1], tmp_path / "m.engine", dk_trt.BuildConfig(timing_cache=cache),
                        trt=fake_tensorrt.make("8.6.1"))
    assert cache.read_bytes().startswith(fake_tensorrt.CACHE_MAGIC)


def test_the_engine_cache_rebuilds_for_another_gpu_and_build_config(small_model, tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYKIT_CACHE", str(tmp_path))
    before = fake_gpu.current()
    trt = fake_tensorrt.make("10.3.0")
    try:
        for dev in (fake_gpu.Device("NVIDIA A100", (8, 0)), fake_gpu.Device("NVIDIA Jetson AGX Orin", (8, 7))):
            fake_gpu.use_device(dev)
            for tf32 in (True, False):
                with runner(small_model[1], trt=trt, build=dk_trt.BuildConfig(tf32=tf32)) as r:
                    assert r.infer({"input": x(1)})["output"].shape == (1, 10)
    finally:
        fake_gpu.use_device(before)
    engines = sorted((tmp_path / "engines").glob("*.engine"))
    timing = sorted((tmp_path / "engines").glob("timing-*.cache"))
    assert len(engines) == 4 and len(timing) == 2  # one engine per (GPU, settings); one timing cache per GPU


def test_an_engine_from_another_gpu_is_refused_in_one_line(small_model, tmp_path):
    before = fake_gpu.current()
    trt = fake_tensorrt.make("10.3.0")
    try:
        fake_gpu.use_device(fake_gpu.Device("NVIDIA A100", (8, 0)))
        dk_trt.build_engine(small_model[1], tmp_path / "m.engine", trt=trt)
        fake_gpu.use_device(fake_gpu.Device("NVIDIA Jetson AGX Orin", (8, 7)))
        with pytest.raises(DeployKitError, match="only on the GPU model and TensorRT version that built it") as e:
            runner(tmp_path / "m.engine", trt=trt).activate()
    finally:
        fake_gpu.use_device(before)
    assert "\n" not in str(e.value)


# -- defect 10: deactivate releases contexts, streams and memory ---------------------------
@pytest.mark.parametrize("version", ["8.6.1", "10.3.0"])
def test_deactivate_releases_contexts_streams_and_buffers(small_model, device, version):
    cuda = fake_gpu.FakeCuda()
    r = runner(small_model[1], version, cuda=cuda, contexts=2)
    r.activate()
    engine = r.engine
    r.infer({"input": x(2)})
    assert engine.live_contexts == 2 and len(cuda.live_streams) == 2 and cuda.mem
    r.deactivate()
    import gc

    gc.collect()
    assert engine.live_contexts == 0
    assert cuda.live_streams == set() and len(cuda.device.destroyed_streams) == 2
    assert cuda.mem == {}
    r.activate()  # and it comes back
    assert r.infer({"input": x(1)})["output"].shape == (1, 10)
    r.deactivate()


# -- the fake refuses what TensorRT refuses --------------------------------------------------
def test_fake_11_enums_are_the_real_ones():
    trt = fake_tensorrt.make("11.0.0")
    assert int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 0
    assert int(trt.NetworkDefinitionCreationFlag.PREFER_JIT_PYTHON_PLUGINS) == 1
    assert int(trt.NetworkDefinitionCreationFlag.PREFER_AOT_PYTHON_PLUGINS) == 2
    assert not hasattr(trt.BuilderFlag, "FP16") and int(trt.BuilderFlag.TF32) == 6
    assert int(fake_tensorrt.make("8.6.1").BuilderFlag.TF32) == 7


def test_fake_10_refuses_precision_flags_at_build_time_on_a_strongly_typed_network(small_model, device):
    trt = fake_tensorrt.make("10.3.0")
    builder = trt.Builder(trt.Logger())
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    assert trt.OnnxParser(network, None).parse_from_file(str(small_model[1]))
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)  # accepted here ...
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, 3, 32, 32), (1, 3, 32, 32), (8, 3, 32, 32))
    config.add_optimization_profile(profile)
    assert builder.build_serialized_network(network, config) is None  # ... refused when building


def test_fake_parser_refuses_unsupported_ops_and_nonzero_zero_points(tmp_path, device):
    import onnx
    from onnx import TensorProto, helper

    def model(node, inits=()):
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(inits))
        path = tmp_path / f"{node.op_type}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
        return path

    unsupported = model(helper.make_node("Det", ["input"], ["y"]))
    scale_zero = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("z", TensorProto.INT8, [], [3])]
    nonzero = model(helper.make_node("QuantizeLinear", ["input", "s", "z"], ["y"]), scale_zero)
    with pytest.raises(DeployKitError, match="No importer registered for op: Det"):
        dk_trt.build_engine(unsupported, tmp_path / "a.engine", trt=fake_tensorrt.make("10.3.0"))
    with pytest.raises(DeployKitError, match="zero point must be zero"):
        dk_trt.build_engine(nonzero, tmp_path / "b.engine", trt=fake_tensorrt.make("8.6.1"))
