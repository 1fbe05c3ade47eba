"""The preprocessing kernel math (host build) against NumPy, OpenCV and the torch path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deploykit.errors import DeployKitError
from deploykit.kernels import reference
from deploykit.zoo.base import IMAGENET_MEAN, IMAGENET_STD, Preprocess

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (dev extra) is the OpenCV reference")

SIZES = [  # (src h, src w) -> (out h, out w): up, down, odd ratios, identity
    ((32, 32), (32, 32)),
    ((45, 61), (32, 32)),
    ((17, 23), (64, 48)),
    ((240, 320), (224, 224)),
    ((7, 300), (13, 29)),
    ((1, 1), (5, 3)),
]


def images(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def opencv_reference(img: np.ndarray, pre: Preprocess, letterbox: bool = False, pad: float = 114.0) -> np.ndarray:
    """cv2.resize (INTER_LINEAR, float input so no 8-bit rounding) + border + normalize."""
    out_h, out_w = pre.size
    h, w = img.shape[:2]
    if letterbox:
        r = min(out_h / h, out_w / w)
        nh, nw = round(h * r), round(w * r)
        top, left = (out_h - nh) // 2, (out_w - nw) // 2
        resized = cv2.resize(img.astype(np.float32), (nw, nh), interpolation=cv2.INTER_LINEAR).reshape(nh, nw, -1)
        canvas = cv2.copyMakeBorder(resized, top, out_h - nh - top, left, out_w - nw - left, cv2.BORDER_CONSTANT,
                                    value=(pad, pad, pad, pad)).reshape(out_h, out_w, -1)
    else:
        canvas = cv2.resize(img.astype(np.float32), (out_w, out_h), interpolation=cv2.INTER_LINEAR).reshape(out_h, out_w, -1)
    x = (canvas / pre.scale - np.float32(pre.mean)) / np.float32(pre.std)
    return x.transpose(2, 0, 1)[None].astype(np.float32)


@pytest.mark.parametrize(("src", "out"), SIZES, ids=[f"{s[0]}x{s[1]}-{o[0]}x{o[1]}" for s, o in SIZES])
def test_resize_normalize_matches_opencv_numpy_and_torch(host, src, out):
    pre = Preprocess(size=out)
    img = images((*src, 3))
    got = host.preprocess(img, pre)
    assert got.shape == (1, 3, *out) and got.dtype == np.float32
    np.testing.assert_allclose(got, reference.preprocess(img, pre), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got, opencv_reference(img, pre), rtol=0, atol=2e-4)
    # torch computes the source coordinate in a different order: about 1e-4 of a pixel apart.
    np.testing.assert_allclose(got, pre.apply(torch.from_numpy(img[None])).numpy(), rtol=0, atol=1e-4)


@pytest.mark.parametrize(("src", "out"), [((45, 61), (32, 32)), ((100, 40), (64, 64)), ((30, 90), (48, 32))])
def test_letterbox_matches_opencv_resize_plus_border(host, src, out):
    pre = Preprocess(size=out)
    img = images((*src, 3), seed=1)
    got = host.preprocess(img, pre, letterbox=True, pad_value=114.0)
    np.testing.assert_allclose(got, opencv_reference(img, pre, letterbox=True), rtol=0, atol=2e-4)
    np.testing.assert_allclose(got, reference.preprocess(img, pre, letterbox=True), rtol=0, atol=1e-6)
    # The padding band really holds the normalized pad value.
    pad = (114.0 / 255.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    assert got[0, 0, 0, 0] == pytest.approx(pad, abs=1e-6)  # every case here leaves a band at the top/left


def test_bgr_input_is_swapped_to_the_models_rgb(host):
    pre = Preprocess(size=(16, 16))
    rgb = images((20, 24, 3), seed=2)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    np.testing.assert_array_equal(host.preprocess(bgr, pre, color="BGR"), host.preprocess(rgb, pre, color="RGB"))
    assert not np.array_equal(host.preprocess(bgr, pre, color="RGB"), host.preprocess(rgb, pre, color="RGB"))


def test_any_row_stride_reads_the_view_not_the_parent(host):
    pre = Preprocess(size=(24, 24))
    parent = images((2, 80, 90, 3), seed=3)
    view = parent[:, 5:55, 7:67, :]  # rows are 270 bytes apart, images 21600
    assert not view.flags.c_contiguous
    got = host.preprocess(view, pre)
    np.testing.assert_array_equal(got, host.preprocess(np.ascontiguousarray(view), pre))
    np.testing.assert_allclose(got, reference.preprocess(view, pre), atol=1e-6)


def test_gray_to_rgb_model_and_rgba_alpha_ignored(host):
    pre = Preprocess(size=(10, 10))
    gray = images((12, 14, 1), seed=4)
    np.testing.assert_array_equal(host.preprocess(gray, pre), host.preprocess(np.repeat(gray, 3, axis=2), pre))
    rgba = images((12, 14, 4), seed=5)
    np.testing.assert_array_equal(host.preprocess(rgba, pre), host.preprocess(np.ascontiguousarray(rgba[..., :3]), pre))


def test_single_channel_model_raw_pixels(host):
    pre = Preprocess(size=(8, 8), mean=(0.0,), std=(1.0,), scale=1.0, channels=1)
    img = images((8, 8, 1), seed=6)
    np.testing.assert_array_equal(host.preprocess(img, pre)[0, 0], img[..., 0].astype(np.float32))


def test_fp16_output_is_the_fp32_result_rounded_to_nearest_even(host):
    pre = Preprocess(size=(32, 32))
    img = images((3, 45, 61, 3), seed=7)
    got = host.preprocess(img, pre, out_dtype="float16")
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, host.preprocess(img, pre).astype(np.float16))


def test_half_conversion_bit_exact_against_numpy(host):
    rng = np.random.default_rng(8)
    # Every exponent of float32 around the half range, plus ties, subnormals and specials.
    mags = np.float32(2.0) ** rng.uniform(-30, 17, 200_000).astype(np.float32)
    signs = rng.choice(np.float32([-1, 1]), mags.size)
    halves = np.arange(0, 0x7C00, dtype=np.uint16).view(np.float16).astype(np.float32)
    ties = (halves[:-1] + (halves[1:] - halves[:-1]) / 2).astype(np.float32)  # exact midpoints
    special = np.float32([0.0, -0.0, np.inf, -np.inf, 65504, 65519.99, 65520, 1e-8, 2.98e-8, 5.96e-8, 6.1e-5])
    x = np.concatenate([mags * signs, halves, ties, -ties, special]).astype(np.float32)
    got = host.f32_to_f16_bits(x)
    with np.errstate(over="ignore"):
        expected = x.astype(np.float16).view(np.uint16)
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(host.f32_to_f16_bits(np.float32([np.nan])).view(np.float16)).all()


def test_batch_of_many_images(host):
    pre = Preprocess(size=(32, 32))
    img = images((5, 33, 31, 3), seed=9)
    got = host.preprocess(img, pre)
    for i in range(5):
        np.testing.assert_array_equal(got[i : i + 1], host.preprocess(img[i], pre))


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.uint8), np.zeros((2, 4, 4, 2), np.uint8),
                                 np.zeros((0, 4, 3), np.uint8)], ids=["float", "2d", "2ch", "empty"])
def test_bad_images_are_user_errors(host, bad):
    with pytest.raises(DeployKitError, match="images"):
        host.preprocess(bad, Preprocess(size=(8, 8)))


def test_rgb_images_for_a_gray_model_is_a_user_error(host):
    with pytest.raises(DeployKitError, match="3-channel images to a 1-channel model"):
        host.preprocess(images((8, 8, 3)), Preprocess(size=(8, 8), mean=(0.0,), std=(1.0,), channels=1))


def test_bad_dtype_and_color_name_list_valid_choices(host):
    with pytest.raises(DeployKitError, match="float32, float16"):
        host.preprocess(images((8, 8, 3)), Preprocess(size=(8, 8)), out_dtype="int8")
    with pytest.raises(DeployKitError, match="RGB, BGR"):
        host.preprocess(images((8, 8, 3)), Preprocess(size=(8, 8)), color="HSV")
