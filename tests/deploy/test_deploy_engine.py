"""deploykit.Engine: predictions match the plain pipeline, any image size and color order,
raw tensors, concurrent threads, and clear errors."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from deploykit.engine import Engine, Prediction
from deploykit.errors import DeployKitError
from deploykit.export.onnx import ort_session, read_sidecar
from deploykit.kernels import reference
from deploykit.runtime.trt import trt_status
from deploykit.zoo.base import Preprocess


def images(n: int, h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def engine(random_onnx):
    with Engine(random_onnx, backend="auto") as e:
        yield e


def plain_pipeline(onnx_path, imgs: np.ndarray) -> np.ndarray:
    """What an app would write by hand: torch preprocessing + an ONNX Runtime session."""
    pre = Preprocess.from_dict(read_sidecar(onnx_path)["preprocess"])
    return ort_session(onnx_path).run(None, {"input": pre.apply(torch.from_numpy(imgs)).numpy()})[0]


def test_auto_backend_without_gpu_is_onnx_runtime(engine):
    if trt_status().ok:
        pytest.skip("a GPU and TensorRT are present: auto picks TensorRT")
    assert engine.backend == "ort" and "ort" in repr(engine)


def test_predict_matches_the_plain_pipeline(engine, random_onnx):
    imgs = images(6, 40, 36)
    preds = engine.predict(imgs, k=3)
    logits = plain_pipeline(random_onnx, imgs)
    ref_scores, ref_idx = reference.softmax_topk(logits, 3)
    assert len(preds) == 6 and all(isinstance(p, Prediction) for p in preds)
    labels = read_sidecar(random_onnx)["labels"]
    for p, s, i in zip(preds, ref_scores, ref_idx):
        assert p.indices == i.tolist() and p.labels == [labels[j] for j in i]
        np.testing.assert_allclose(p.scores, s, rtol=1e-4, atol=1e-6)
        assert p.label == p.labels[0] and p.score == p.scores[0]


def test_single_image_gives_one_prediction_and_lists_may_mix_sizes(engine):
    one = engine.predict(images(1)[0])
    assert isinstance(one, Prediction) and len(one.labels) == 5
    mixed = [images(1, 32, 32, seed=1)[0], images(1, 64, 48, seed=2)[0], images(1, 20, 70, seed=3)[0]]
    preds = engine.predict(mixed, k=2)
    assert [p.indices for p in preds] == [engine.predict(im, k=2).indices for im in mixed]


def test_bgr_frames_are_swapped(random_onnx):
    rgb = images(3, seed=4)
    with Engine(random_onnx, color="BGR") as bgr_engine, Engine(random_onnx) as rgb_engine:
        bgr = bgr_engine.predict(np.ascontiguousarray(rgb[..., ::-1]))
        assert [p.indices for p in bgr] == [p.indices for p in rgb_engine.predict(rgb)]
        np.testing.assert_allclose([p.scores for p in bgr], [p.scores for p in rgb_engine.predict(rgb)], rtol=1e-6)


def test_raw_tensors_in_and_out(engine, random_onnx):
    x = np.random.default_rng(5).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(engine(x), ort_session(random_onnx).run(None, {"input": x})[0])
    assert set(engine({"input": x})) == {"output"}


def test_concurrent_predict_from_threads(engine):
    batches = [images(1 + i % 3, seed=10 + i) for i in range(8)]
    serial = [[p.indices for p in engine.predict(b)] for b in batches]
    got: dict[int, list] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(3):
                got[i] = [p.indices for p in engine.predict(batches[i])]
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and [got[i] for i in range(len(batches))] == serial


def test_bundle_directory_loads_with_its_sidecar(random_onnx, tmp_path):
    from deploykit.export.bundle import write_bundle

    write_bundle("jetson", random_onnx, tmp_path / "b", np.zeros((2, 3, 32, 32), np.float32))
    with Engine(tmp_path / "b", backend="ort") as e:
        assert e.labels == read_sidecar(random_onnx)["labels"]
        assert e.predict(images(2))[0].indices == Engine(random_onnx).predict(images(2))[0].indices


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"backend": "tflite"}, "valid: auto, ort, torch, trt"),
    ({"color": "HSV"}, "RGB, BGR"),
])
def test_bad_arguments(random_onnx, kwargs, match):
    with pytest.raises(DeployKitError, match=match):
        Engine(random_onnx, **kwargs)


def test_missing_file_and_missing_sidecar(tmp_path, random_onnx):
    with pytest.raises(DeployKitError, match="does not exist"):
        Engine(tmp_path / "nope.onnx")
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(random_onnx.read_bytes())
    with pytest.raises(DeployKitError, match="sidecar"):
        Engine(bare)
    with pytest.raises(DeployKitError, match="not an .onnx or .engine"):
        Engine(tmp_path)


def test_trt_backend_without_gpu_is_one_clear_error(random_onnx):
    if trt_status().ok:
        pytest.skip("a GPU and TensorRT are present")
    with pytest.raises(DeployKitError, match="needs a CUDA GPU") as e:
        Engine(random_onnx, backend="trt")
    assert str(random_onnx) in str(e.value)


def test_predict_rejects_bad_images(engine):
    with pytest.raises(DeployKitError, match="uint8"):
        engine.predict(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(DeployKitError, match="empty list"):
        engine.predict([])


@pytest.mark.gpu
@pytest.mark.skipif(not trt_status().ok, reason=f"needs a GPU with TensorRT: {trt_status().reason}")
def test_gpu_engine_matches_cpu_engine(random_onnx):
    imgs = images(4, 48, 40, seed=6)
    with Engine(random_onnx, backend="trt") as gpu, Engine(random_onnx, backend="ort") as cpu:
        for g, c in zip(gpu.predict(imgs), cpu.predict(imgs)):
            assert g.indices[0] == c.indices[0]
            np.testing.assert_allclose(g.scores, c.scores, rtol=1e-2, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not trt_status().ok, reason=f"needs a GPU: {trt_status().reason}")
def test_device_kernels_match_the_host_build():
    from deploykit.kernels import backend

    host, cuda = backend("host"), backend("cuda")
    pre = Preprocess(size=(32, 32))
    imgs = images(3, 45, 61, seed=7)
    for kwargs in ({}, {"letterbox": True}, {"color": "BGR", "out_dtype": "float16"}):
        np.testing.assert_array_equal(cuda.preprocess(imgs, pre, **kwargs), host.preprocess(imgs, pre, **kwargs))
    logits = np.random.default_rng(8).standard_normal((5, 1000)).astype(np.float32)
    hs, hi = host.softmax_topk(logits, 5)
    ds, di = cuda.softmax_topk(logits, 5)
    np.testing.assert_array_equal(di, hi)
    np.testing.assert_allclose(ds, hs, rtol=1e-6)
    seg = np.random.default_rng(9).standard_normal((2, 21, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(cuda.argmax_channels(seg), host.argmax_channels(seg))


def test_engine_is_exposed_lazily_on_the_package():
    import subprocess
    import sys

    code = ("import sys, deploykit; assert 'deploykit.engine' not in sys.modules; "
            "from deploykit import Engine; import deploykit.engine as m; assert Engine is m.Engine; print('ok')")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "ok"
