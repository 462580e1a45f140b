"""runtime.outputs.postprocess against upstream TractSeg's img_utils / direction_merger on small volumes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from runtime.outputs.postprocess import endings_mask, has_two_big_blobs, remove_small_blobs, tract_mask
from tests.upstream import upstream_modules


def upstream_tract_mask(prob3d: np.ndarray, bundle: str) -> np.ndarray:
    _, img_utils, _ = upstream_modules()
    return img_utils.bundle_specific_postprocessing(prob3d[..., None], [bundle])[..., 0]


def two_blob_probabilities(blob_edge: int, bridge_prob: float) -> np.ndarray:
    """Two cubic blobs (prob 0.8) of blob_edge^3 voxels joined by a bar of bridge_prob, rest 0.1; the first blob
    has a one-voxel hole that only the 6x6x6 closing fills."""
    prob = np.full((32, 32, 32), 0.1, dtype=np.float32)
    prob[4:4 + blob_edge, 8:8 + blob_edge, 8:8 + blob_edge] = 0.8
    prob[20:20 + blob_edge, 8:8 + blob_edge, 8:8 + blob_edge] = 0.8
    prob[4 + blob_edge // 2, 8 + blob_edge // 2, 8 + blob_edge // 2] = 0.1
    prob[4 + blob_edge:20, 9:11, 9:11] = bridge_prob
    return prob


@pytest.mark.parametrize("bundle", ["AF_left", "CST_right", "CC", "fx_l", "ac", "CA_b"])
def test_plain_threshold_is_strict_and_matches_upstream(bundle: str) -> None:
    rng = np.random.default_rng(0)
    prob = rng.random((17, 13, 11)).astype(np.float32)
    prob[::3, ::2, 1] = 0.5
    ours = tract_mask(prob, bundle)
    assert ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, upstream_tract_mask(prob, bundle))
    np.testing.assert_array_equal(ours, (prob > 0.5).astype(np.uint8))


@pytest.mark.parametrize("bundle, blob_edge, lowered", [
    ("CA", 6, True),        # 215 > 200: two big blobs -> threshold 0.3 joins them through the 0.35 bridge
    ("CA", 5, False),       # 124 <= 200: stays at 0.5
    ("FX_left", 5, True),   # 124 > 100 -> threshold 0.4 (the 0.45 bridge joins)
    ("FX_right", 4, False),  # 64 <= 100
])
def test_ca_fx_rule_matches_upstream(bundle: str, blob_edge: int, lowered: bool) -> None:
    bridge = 0.35 if bundle == "CA" else 0.45
    prob = two_blob_probabilities(blob_edge, bridge)
    limit = 200 if bundle == "CA" else 100
    assert has_two_big_blobs(prob > 0.5, limit) is lowered
    ours = tract_mask(prob, bundle)
    np.testing.assert_array_equal(ours, upstream_tract_mask(prob, bundle))
    _, blob_count = ndimage.label(ours)
    assert blob_count == (1 if lowered else 2)  # the bridge only survives the lowered threshold
    hole = (4 + blob_edge // 2, 8 + blob_edge // 2, 8 + blob_edge // 2)
    assert ours[hole] == 1  # the 6x6x6 closing applies in both branches


def test_ca_rule_on_noisy_probabilities_matches_upstream() -> None:
    rng = np.random.default_rng(1)
    prob = ndimage.uniform_filter(rng.random((24, 28, 20)), size=4).astype(np.float32)
    prob = (prob - prob.min()) / (prob.max() - prob.min())
    for bundle in ("CA", "FX_left", "FX_right"):
        np.testing.assert_array_equal(tract_mask(prob, bundle), upstream_tract_mask(prob, bundle))


def test_has_two_big_blobs_matches_upstream_including_blob_bigger_than_background() -> None:
    _, img_utils, _ = upstream_modules()
    rng = np.random.default_rng(2)
    masks = [rng.random((20, 20, 20)) > 0.7, np.zeros((8, 8, 8), bool), np.ones((8, 8, 8), bool)]
    nearly_full = np.ones((12, 12, 12), bool)
    nearly_full[:, 6, :] = False  # two blobs of 792 and 720 voxels, background 144
    masks.append(nearly_full)
    for mask in masks:
        for bundle, limit in (("CA", 200), ("FX_left", 100)):
            assert has_two_big_blobs(mask, limit) == img_utils.has_two_big_blobs(mask, bundle, debug=False)


def test_endings_mask_matches_upstream_mean_fusion() -> None:
    upstream_modules()  # skips without tractseg; registers the dipy stand-in when needed
    from tractseg.libs import direction_merger

    rng = np.random.default_rng(3)
    per_direction = rng.random((9, 10, 11, 1, 3)).astype(np.float32)
    per_direction[::2, ::3, ::2, 0, :] = 0.5  # mean exactly 0.5 -> 1
    expected = direction_merger.mean_fusion(0.5, per_direction.copy(), probs=False)[..., 0]
    ours = endings_mask(per_direction.mean(axis=4)[..., 0])
    assert ours.dtype == expected.dtype == np.int16
    np.testing.assert_array_equal(ours, expected)


def upstream_remove_small_blobs(mask: np.ndarray, threshold: int) -> np.ndarray:
    _, img_utils, _ = upstream_modules()
    return img_utils.remove_small_blobs(mask.copy(), threshold=threshold, debug=False)


@pytest.mark.parametrize("density, max_size", [(0.25, 25), (0.3, 3), (0.2, 50), (0.31, 1000)])
def test_remove_small_blobs_matches_upstream_on_many_blobs(density: float, max_size: int) -> None:
    rng = np.random.default_rng(4)
    mask = (rng.random((30, 26, 22)) < density).astype(np.uint8)
    assert ndimage.label(mask)[1] > 300
    ours = remove_small_blobs(mask, max_size)
    assert ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, upstream_remove_small_blobs(mask, max_size))


def test_remove_small_blobs_keeps_first_of_tied_largest_blobs() -> None:
    mask = np.zeros((20, 20, 20), dtype=np.uint8)
    mask[2:4, 2:4, 2:4] = 1      # 8 voxels, first in scan order
    mask[10:12, 10:12, 10:12] = 1  # 8 voxels
    mask[15, 15, 15] = 1
    ours = remove_small_blobs(mask, 25)
    np.testing.assert_array_equal(ours, upstream_remove_small_blobs(mask, 25))
    assert ours.sum() == 8 and ours[2, 2, 2] == 1


@pytest.mark.parametrize("case", ["empty", "full", "one_small_blob", "blob_bigger_than_background"])
def test_remove_small_blobs_edge_cases_match_upstream(case: str) -> None:
    mask = np.zeros((10, 10, 10), dtype=np.uint8)
    if case == "full":
        mask[:] = 1
    elif case == "one_small_blob":
        mask[4:6, 4:6, 4] = 1
    elif case == "blob_bigger_than_background":
        mask[:] = 1
        mask[:, 3, :] = 0  # blobs of 300 (y < 3, label 1) and 600 voxels, background 100
        # upstream protects the blob whose count is the second largest overall: the 300-voxel one
    for max_size in (0, 25, 2000):
        np.testing.assert_array_equal(remove_small_blobs(mask, max_size), upstream_remove_small_blobs(mask, max_size))
    if case == "blob_bigger_than_background":
        kept = remove_small_blobs(mask, 2000)
        assert kept.sum() == 300 and kept[:, :3, :].all()
