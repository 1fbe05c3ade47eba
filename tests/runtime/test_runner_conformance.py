"""One set of tests for every Runner backend present.

``torch`` and ``ort`` always run; ``trt-fake-*`` is the real TensorRT runner driven by a
fake ``tensorrt`` module of that version and a host-memory CUDA API (its shapes, buffers,
context pool, per-context optimization profiles and addresses all execute); ``trt`` is
the real thing and needs a GPU.

TF32: TensorRT lets FP32 layers use TF32 by default on Ampere and newer (10-bit
mantissas, relative errors near 1e-3), which the fake reproduces. The TensorRT runners
here build their parity engines with ``tf32=False`` and are held to the same 1e-4 as the
other backends: this test checks FP32 correctness, not TF32's rounding.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from deploykit.errors import DeployKitError
from deploykit.runtime.backends import load_runner
from deploykit.runtime.base import Runner
from deploykit.runtime.trt import BuildConfig, trt_status

import fake_tensorrt  # noqa: E402  (tests/runtime is on sys.path under pytest's rootdir mode)


def _torch(model):
    from deploykit.runtime.torch import TorchRunner

    built, _ = model
    return TorchRunner(built.spec, built=built)


def _ort(model):
    return load_runner(model[1], backend="ort")


PARITY_BUILD = BuildConfig(tf32=False)


def _trt_fake_of(version):
    def make(model):
        from deploykit.runtime.trt import TrtRunner

        return TrtRunner(model[1], build=PARITY_BUILD, trt=fake_tensorrt.make(version), cuda=fake_tensorrt.FakeCuda())
    return make


_trt_fake = _trt_fake_of("10.3.0")


def _trt(model):
    return load_runner(model[1], backend="trt", build=PARITY_BUILD)


BACKENDS = {
    "torch": pytest.param(_torch, id="torch"),
    "ort": pytest.param(_ort, id="ort"),
    "trt-fake-8.6": pytest.param(_trt_fake_of("8.6.1"), id="trt-fake-8.6"),
    "trt-fake-10": pytest.param(_trt_fake, id="trt-fake-10"),
    "trt-fake-11": pytest.param(_trt_fake_of("11.0.0"), id="trt-fake-11"),
    "trt": pytest.param(_trt, id="trt", marks=[pytest.mark.gpu, pytest.mark.skipif(
        not trt_status().ok, reason=f"TensorRT backend unavailable: {trt_status().reason}")]),
}


@pytest.fixture(params=list(BACKENDS.values()))
def runner(request, small_model):
    r: Runner = request.param(small_model)
    with r:
        yield r


def reference(small_model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return small_model[0].model(torch.from_numpy(x)).numpy()


def batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype(np.float32)


def test_metadata_names_dtypes_and_dynamic_batch(runner):
    ins, outs = runner.get_input_metadata(), runner.get_output_metadata()
    assert list(ins) == ["input"] and list(outs) == ["output"]
    assert ins["input"].dtype == np.float32 and ins["input"].shape == (None, 3, 32, 32)
    assert outs["output"].shape == (None, 10)
    assert ins["input"].to_dict() == {"name": "input", "dtype": "float32", "shape": [None, 3, 32, 32]}


@pytest.mark.parametrize("n", [1, 3])
def test_outputs_match_pytorch(runner, small_model, n):
    x = batch(n, seed=n)
    out = runner.infer({"input": x})
    assert set(out) == {"output"} and out["output"].shape == (n, 10) and out["output"].dtype == np.float32
    np.testing.assert_allclose(out["output"], reference(small_model, x), rtol=1e-4, atol=1e-4)


def test_concurrent_calls_from_threads_match_serial_calls(runner):
    inputs = [batch(1 + i % 2, seed=10 + i) for i in range(8)]
    serial = [runner.infer({"input": x})["output"] for x in inputs]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(3):
                results[i] = runner.infer({"input": inputs[i]})["output"]
        except BaseException as e:  # noqa: BLE001 - surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, ref in enumerate(serial):
        np.testing.assert_array_equal(results[i], ref)


@pytest.mark.parametrize(("feed", "match"), [
    ({}, "missing \\['input'\\]"),
    ({"input": batch(1), "extra": batch(1)}, "unexpected \\['extra'\\]"),
    ({"input": batch(1).astype(np.float64)}, "dtype float64, the model expects float32"),
    ({"input": np.zeros((1, 3, 16, 16), np.float32)}, "shape 1x3x16x16, the model expects \\?x3x32x32"),
    ({"input": np.zeros((3, 32, 32), np.float32)}, "shape 3x32x32"),
    ({"input": [[1.0]]}, "numpy array"),
], ids=["missing", "extra", "dtype", "spatial", "rank", "list"])
def test_bad_feeds_are_user_errors_naming_the_problem(runner, feed, match):
    with pytest.raises(DeployKitError, match=match):
        runner.infer(feed)


def test_inactive_runner_refuses_and_lifecycle_is_idempotent(small_model, request):
    for make in (_torch, _ort, _trt_fake):
        r = make(small_model)
        with pytest.raises(DeployKitError, match="not active"):
            r.infer({"input": batch(1)})
        r.activate()
        r.activate()
        assert r.infer({"input": batch(1)})["output"].shape == (1, 10)
        r.deactivate()
        r.deactivate()
        assert not r.is_active


def test_unknown_backend_lists_valid_ones(small_model):
    with pytest.raises(DeployKitError, match="valid: ort, torch, trt"):
        load_runner(small_model[1], backend="tensorflow")
