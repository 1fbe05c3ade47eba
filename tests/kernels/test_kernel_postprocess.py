"""Softmax + top-k and per-pixel argmax (host build) against NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from deploykit.errors import DeployKitError
from deploykit.kernels import reference


@pytest.mark.parametrize(("rows", "classes", "k"), [(1, 10, 1), (4, 10, 5), (3, 1000, 5), (2, 7, 7), (64, 100, 3)])
def test_softmax_topk_matches_numpy(host, rows, classes, k):
    logits = (np.random.default_rng(rows * classes).standard_normal((rows, classes)) * 4).astype(np.float32)
    scores, idx, probs = host.softmax_topk(logits, k, with_probs=True)
    ref_scores, ref_idx = reference.softmax_topk(logits, k)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(scores, ref_scores, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(probs, reference.softmax(logits), rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_topk_ties_take_the_lower_index_first(host):
    logits = np.float32([[1, 3, 3, 0, 3, 2]])
    scores, idx = host.softmax_topk(logits, 4)
    assert idx.tolist() == [[1, 2, 4, 5]]
    assert scores[0, 0] == scores[0, 1] == scores[0, 2] > scores[0, 3]


def test_softmax_is_stable_for_huge_logits(host):
    logits = np.float32([[1000.0, 999.0, -1000.0]])
    scores, idx = host.softmax_topk(logits, 3)
    assert np.isfinite(scores).all()
    np.testing.assert_allclose(scores[0], reference.softmax(logits)[0], rtol=1e-6, atol=1e-30)


def test_nan_logits_are_never_picked(host):
    scores, idx = host.softmax_topk(np.float32([[np.nan, 1.0, 2.0]]), 2)
    assert idx.tolist() == [[2, 1]]


@pytest.mark.parametrize("k", [0, 11])
def test_bad_k_is_a_user_error(host, k):
    with pytest.raises(DeployKitError, match="1 <= k <= classes"):
        host.softmax_topk(np.zeros((2, 10), np.float32), k)


def test_argmax_channels_matches_numpy_including_ties(host):
    rng = np.random.default_rng(0)
    logits = rng.integers(0, 4, (2, 5, 17, 23)).astype(np.float32)  # many ties
    np.testing.assert_array_equal(host.argmax_channels(logits), reference.argmax_channels(logits))
    logits = rng.standard_normal((3, 21, 8, 9)).astype(np.float32)
    got = host.argmax_channels(logits)
    assert got.dtype == np.int32 and got.shape == (3, 8, 9)
    np.testing.assert_array_equal(got, np.argmax(logits, axis=1))


def test_argmax_needs_nchw(host):
    with pytest.raises(DeployKitError, match="NCHW"):
        host.argmax_channels(np.zeros((2, 3), np.float32))
