"""Edge cases of the Engine and the public API: every bad argument is one DeployKitError line naming
what was given and what is valid; a cached host-kernel library that does not load is rebuilt, or
replaced by the NumPy reference with one logged line."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

import deploykit
from deploykit.engine import Engine, Prediction
from deploykit.errors import DeployKitError
from deploykit.export.onnx import export_onnx
from deploykit import kernels
from deploykit.kernels import host, reference
from deploykit.zoo.base import BuiltModel
from deploykit.zoo.digits import DigitsResNet, digits_preprocess


def images(n: int, h: int = 32, w: int = 32, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg, msg
    return msg


@pytest.fixture(scope="module")
def engine(random_onnx):
    with Engine(random_onnx, backend="ort") as e:
        yield e


@pytest.fixture(scope="module")
def gray_onnx(tmp_path_factory) -> Path:
    """A 1-channel classifier (the digits architecture, random weights: nothing is trained)."""
    torch.manual_seed(0)
    built = BuiltModel(DigitsResNet().eval(), "digits:demo", (1, 1, 16, 16), digits_preprocess(),
                       labels=[str(i) for i in range(10)])
    path = tmp_path_factory.mktemp("gray") / "gray.onnx"
    export_onnx(built, path)
    return path


# -- construction --------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "message"), [
    ({"top_k": 0}, "Engine(top_k=0): top_k must be a positive integer (classes per image), e.g. 5"),
    ({"top_k": -3}, "Engine(top_k=-3): top_k must be a positive integer"),
    ({"top_k": 2.5}, "Engine(top_k=2.5): top_k must be a positive integer"),
    ({"top_k": "5"}, "Engine(top_k='5'): top_k must be a positive integer"),
    ({"top_k": True}, "Engine(top_k=True): top_k must be a positive integer"),
    ({"max_batch": -1}, "Engine(max_batch=-1): max_batch must be a positive integer (images per runner call) "
                        "or None (the whole batch at once)"),
    ({"max_batch": 0}, "Engine(max_batch=0): max_batch must be a positive integer"),
    ({"max_batch": 1.5}, "Engine(max_batch=1.5): max_batch must be a positive integer"),
    ({"max_batch": "8"}, "Engine(max_batch='8'): max_batch must be a positive integer"),
    ({"threads": 0}, "Engine(threads=0): threads must be a positive integer or None (ONNX Runtime's default)"),
])
def test_bad_construction_arguments_are_one_line(random_onnx, kwargs, message):
    with pytest.raises(DeployKitError) as e:
        Engine(random_onnx, backend="ort", **kwargs)
    assert one_line(e).startswith(message)


def test_valid_batch_limits_and_k(random_onnx, engine):
    imgs = images(5, seed=1)
    whole = engine.predict(imgs, k=3)
    with Engine(random_onnx, backend="ort", max_batch=2, top_k=np.int64(2)) as small:
        assert small.max_batch == 2 and small.top_k == 2
        chunked = small.predict(imgs)  # 2 + 2 + 1 images per runner call
        assert [p.indices for p in chunked] == [p.indices[:2] for p in whole]
        np.testing.assert_allclose([p.scores for p in chunked], [p.scores[:2] for p in whole], rtol=1e-6)
    # k above the class count is every class, best first; a numpy integer is an integer.
    assert len(engine.predict(imgs[0], k=1000).indices) == 10
    assert len(engine.predict(imgs[0], k=np.int32(4)).indices) == 4


# -- predict -------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [0, -1, 2.0, "3", True])
def test_k_must_be_a_positive_integer(engine, k):
    with pytest.raises(DeployKitError) as e:
        engine.predict(images(1)[0], k=k)
    assert one_line(e) == (f"predict(k={k!r}): k must be a positive integer (classes per image) or None "
                           "(the Engine's top_k, 5)")


VALID_RGB = ("valid: uint8 HWC images or NHWC batches with 1, 3 or 4 channels (the model takes 3-channel input) "
             "and height and width >= 1")


@pytest.mark.parametrize(("given", "message"), [
    (None, "images: got None; " + VALID_RGB + ", or a list of uint8 HWC images"),
    ("cat.jpg", "images: got a str; " + VALID_RGB + ", or a list of uint8 HWC images"),
    ({"input": 1}, "images: got a dict; " + VALID_RGB + ", or a list of uint8 HWC images"),
    (np.zeros((0, 32, 32, 3), np.uint8), "images: got an empty batch (shape (0, 32, 32, 3)); give at least one image"),
    (np.zeros((32, 32, 3), np.float32), "images: got a float32 array of shape (32, 32, 3); " + VALID_RGB),
    (np.zeros((32, 32, 2), np.uint8), "images: got a uint8 array of shape (32, 32, 2); " + VALID_RGB),
    (np.zeros((32, 32), np.uint8), "images: got a uint8 array of shape (32, 32); " + VALID_RGB),
    (np.zeros((1, 2, 32, 32, 3), np.uint8), "images: got a uint8 array of shape (1, 2, 32, 32, 3); " + VALID_RGB),
    (np.zeros((0, 32, 3), np.uint8), "images: got a uint8 array of shape (0, 32, 3); " + VALID_RGB),
    (np.zeros((2, 3, 32, 32), np.uint8), "images: got a uint8 array of shape (2, 3, 32, 32); " + VALID_RGB),
    ([], "predict() got an empty list of images; give at least one image"),
    ([images(1)[0], None], "images[1]: got None; valid: uint8 HWC images with 1, 3 or 4 channels (the model "
                           "takes 3-channel input) and height and width >= 1"),
    ([images(2)], "images[0]: got a uint8 array of shape (2, 32, 32, 3); valid: uint8 HWC images with 1, 3 or 4 "
                  "channels (the model takes 3-channel input) and height and width >= 1"),
], ids=["none", "str", "dict", "empty-batch", "float32", "2-channels", "2d", "5d", "zero-height", "nchw",
        "empty-list", "none-in-list", "batch-in-list"])
def test_bad_images_are_one_line(engine, given, message):
    with pytest.raises(DeployKitError) as e:
        engine.predict(given)
    assert one_line(e) == message


def test_gray_model_takes_only_gray_images(gray_onnx):
    with Engine(gray_onnx, backend="ort") as e:
        pred = e.predict(images(1, 8, 8, c=1)[0], k=3)
        assert isinstance(pred, Prediction) and len(pred.indices) == 3
        for c in (3, 4):
            with pytest.raises(DeployKitError) as err:
                e.predict(images(2, 8, 8, c=c))
            assert one_line(err) == (f"images: got a uint8 array of shape (2, 8, 8, {c}); valid: uint8 HWC images or "
                                     "NHWC batches with 1 channel (the model takes 1-channel input) and height and "
                                     "width >= 1")


def test_labels_shorter_than_the_outputs_are_one_line(random_onnx):
    with Engine(random_onnx, backend="ort") as e:
        e.labels = e.labels[:3]  # as a hand-edited sidecar would have it
        with pytest.raises(DeployKitError) as err:
            e.predict(images(1)[0])
        assert one_line(err) == (f"{random_onnx} gives 3 labels but the model has 10 outputs; "
                                 "give one label per output (or none)")


# -- public API ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("call", "message"), [
    (lambda: deploykit.load(None), "an artifact is a directory path (str or Path), not NoneType"),
    (lambda: deploykit.load(3), "an artifact is a directory path (str or Path), not int"),
    (lambda: deploykit.load(".", trust_factory="no"), "load: trust_factory='no'; valid: True or False"),
    (lambda: deploykit.build_model(None), "a MODEL spec is a string"),
    (lambda: deploykit.export_onnx(None, "x.onnx"),
     "export_onnx: built is a NoneType; give the BuiltModel that deploykit.load() or deploykit.build_model() returns"),
    (lambda: deploykit.export_onnx("cifar:resnet20", "x.onnx"),
     "export_onnx: built is a str; give the BuiltModel that deploykit.load() or deploykit.build_model() returns; "
     "build it first with deploykit.build_model(spec)"),
    (lambda: deploykit.compress(model=None, out="o", target_macs=0.5), "--model None: Input should be a valid string"),
    (lambda: deploykit.compress(model="cifar:resnet20", out="o"), "no target: pass at least one of"),
])
def test_public_api_refuses_none_and_wrong_types(call, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DeployKitError) as e:
        call()
    assert one_line(e).startswith(message)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("path", "opset", "message"), [
    (None, 17, "export_onnx: path None is not a file path; give one as a str or Path, e.g. 'model.onnx'"),
    ("", 17, "export_onnx: path '' is not a file path"),
    ("x.onnx", "17", "export_onnx: opset '17' is not an integer; valid: 7..22 (default 17)"),
    ("x.onnx", None, "export_onnx: opset None is not an integer"),
])
def test_export_onnx_refuses_bad_paths_and_opsets(path, opset, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    built = BuiltModel(DigitsResNet().eval(), "digits:demo", (1, 1, 16, 16), digits_preprocess())
    with pytest.raises(DeployKitError) as e:
        deploykit.export_onnx(built, path, opset=opset)
    assert one_line(e).startswith(message)
    assert list(tmp_path.iterdir()) == []


def test_compress_takes_pathlib_paths(tmp_path):
    # Validation sees the same strings as from the CLI: a Path is not "not a valid string".
    with pytest.raises(DeployKitError) as e:
        deploykit.compress(model="cifar:resnet20", out=tmp_path / "o", target_macs=1.5)
    assert "--target-macs 1.5 is outside (0, 1]" in one_line(e)
    assert list(tmp_path.iterdir()) == []


# -- the host kernel library ---------------------------------------------------------------------

requires_gxx = pytest.mark.skipif(host.compiler() is None,
                                  reason="no C++ compiler: the host library cannot be built here")


@pytest.fixture
def fresh_host(tmp_path, monkeypatch):
    """The host module with nothing loaded, caching into an empty directory."""
    monkeypatch.setenv("DEPLOYKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(host, "_lib", None)
    monkeypatch.setattr(host, "_unusable", None)
    return host


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == host.__name__ and r.levelno >= logging.WARNING]


@requires_gxx
def test_a_truncated_cached_library_is_rebuilt_once(fresh_host, caplog):
    path = fresh_host.build()
    good = path.stat().st_size
    path.write_bytes(path.read_bytes()[:100])  # what a copy cut short or a full disk leaves
    with caplog.at_level(logging.WARNING, logger=host.__name__):
        lib = fresh_host.library()
    assert lib.dk_host_abi_version() == host.ABI_VERSION and path.stat().st_size == good
    logged = _warnings(caplog)
    assert len(logged) == 1, logged
    assert f"the cached host kernel library {path} did not load" in logged[0] and "rebuilt it" in logged[0]
    assert kernels.cpu_backend() is host
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left beside it


@requires_gxx
def test_a_library_that_does_not_load_after_a_rebuild_falls_back_to_numpy(fresh_host, tmp_path, monkeypatch, caplog,
                                                                         random_onnx):
    # A "compiler" whose output is never a shared library: the cached file and its rebuild both fail to load.
    fake = tmp_path / "fake-g++"
    fake.write_text('#!/bin/sh\nwhile [ $# -gt 0 ]; do if [ "$1" = -o ]; then echo garbage > "$2"; fi; shift; done\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("CXX", str(fake))
    with caplog.at_level(logging.WARNING, logger=host.__name__):
        assert kernels.cpu_backend() is reference
        assert kernels.cpu_backend() is reference  # decided once: no second build, no second line
        with Engine(random_onnx, backend="ort") as e:
            assert e.kernels is reference
            pred = e.predict(images(2, seed=3), k=2)
    logged = _warnings(caplog)
    assert len(logged) == 1, logged
    assert "does not load" in logged[0] and "rebuilding it failed" in logged[0]
    assert "using the NumPy reference" in logged[0]
    assert len(pred) == 2 and all(len(p.indices) == 2 for p in pred)
    with pytest.raises(DeployKitError) as err:
        fresh_host.library()
    assert one_line(err).startswith("the host kernel library ")
    assert not [p for p in (tmp_path / "cache" / "kernels").iterdir() if p.name.startswith(".host-")]
