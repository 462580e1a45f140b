"""Thresholds and post-processing of the fused probabilities, one bundle at a time, in upstream's semantics.

Mirrors (TractSeg 2.10):

* ``img_utils.bundle_specific_postprocessing`` + ``img_utils.has_two_big_blobs``  -> :func:`tract_mask`
* ``direction_merger.mean_fusion(threshold, probs, probs=False)``                  -> :func:`endings_mask`
* ``img_utils.remove_small_blobs`` (as called by ``postprocess_segmentations``)    -> :func:`remove_small_blobs`

What the upstream CLI (``bin/TractSeg``) applies by default:

* tract_segmentation: ``bundle_specific_postprocessing = True`` (hard-coded), so the fused mean probabilities are
  binarised in cube space by ``bundle_specific_postprocessing``: ``prob > 0.5`` (strict; the hard-coded 0.5, not
  ``--threshold``) -> uint8, with the CA / FX_left / FX_right rule below. Then back to the input grid, then
  ``postprocess = not --no_postprocess`` (so on by default) runs ``postprocess_segmentations`` with
  ``blob_thr = 25`` (the CLI sets 25; the Python API default is 50) and ``hole_closing = None``: per bundle
  ``remove_small_blobs(threshold=25)``. All of this happens before the CLI flips the result back.
* endings_segmentation: ``mean >= 0.5`` -> int16 (``mean_fusion``); no bundle-specific rule, no blob removal
  (both are gated on ``EXPERIMENT_TYPE == "tract_segmentation"``).
* ``--get_probabilities``: the float32 mean probabilities, no thresholds, no post-processing at all.
* ``--uncertainty`` (dropout sampling) disables both post-processing steps; it is not reproduced here.

The CA / FX rule checks bundle names literally ("CA", "FX_left", "FX_right"), so it never fires for the xtract
bundle set (whose names are "ac", "fx_l", "fx_r", ...). For these three bundles upstream counts the 6-connected
blobs of ``prob > 0.5``; if at least two blobs are bigger than 200 (CA) / 100 (FX) voxels, the threshold drops to
0.3 (CA) / 0.4 (FX), else stays 0.5 (strict ``>``). Either way the mask then gets
``scipy.ndimage.binary_closing(mask, structure=np.ones((6, 6, 6)))``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: bundle name -> (blob size that counts as "big" (strictly more voxels), lowered threshold)
BUNDLE_SPECIFIC_RULES: dict[str, tuple[int, float]] = {
    "CA": (200, 0.3),
    "FX_left": (100, 0.4),
    "FX_right": (100, 0.4),
}
TRACT_THRESHOLD = 0.5          # strict: prob > 0.5
ENDINGS_THRESHOLD = 0.5        # inclusive: prob >= 0.5
CLOSING_EDGE = 6               # binary_closing structure ones((6, 6, 6)) for the rule bundles
CLI_BLOB_SIZE_THRESHOLD = 25   # blobs with <= 25 voxels are removed by the upstream CLI


def _blob_sizes(mask3d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """6-connected labels (scipy's default structure, as upstream) and the voxel count per label (label 0 =
    background included)."""
    labels, _ = ndimage.label(mask3d)
    return labels, np.bincount(labels.ravel())


def has_two_big_blobs(mask3d: np.ndarray, big_blob_size: int) -> bool:
    """Upstream img_utils.has_two_big_blobs: at least two blobs with more than ``big_blob_size`` voxels.

    As upstream, the largest count is dropped as "the background" (it is the background unless a blob is bigger
    than the background) and the remaining counts are compared.
    """
    _, counts = _blob_sizes(mask3d)
    if len(counts) <= 1:
        return False
    counts_without_largest = np.sort(counts)[::-1][1:]
    return int(np.count_nonzero(counts_without_largest > big_blob_size)) >= 2


def tract_mask(prob3d: np.ndarray, bundle_name: str) -> np.ndarray:
    """Binary bundle mask in cube space from the fused mean probability (upstream bundle_specific_postprocessing
    for one bundle). Returns uint8 0/1."""
    rule = BUNDLE_SPECIFIC_RULES.get(bundle_name)
    if rule is None:
        return (prob3d > TRACT_THRESHOLD).astype(np.uint8)
    big_blob_size, lowered_threshold = rule
    threshold = lowered_threshold if has_two_big_blobs(prob3d > TRACT_THRESHOLD, big_blob_size) else TRACT_THRESHOLD
    closing_structure = np.ones((CLOSING_EDGE,) * 3)
    closed = ndimage.binary_closing(prob3d > threshold, structure=closing_structure)
    return closed.astype(np.uint8)


def endings_mask(prob3d: np.ndarray) -> np.ndarray:
    """Binary ending-region mask (upstream mean_fusion with probs=False): ``prob >= 0.5`` as int16, the dtype
    upstream writes. (Upstream would turn a NaN probability into an undefined int16; ours maps it to 0.)"""
    return (prob3d >= ENDINGS_THRESHOLD).astype(np.int16)


def remove_small_blobs(mask3d: np.ndarray, max_size: int = CLI_BLOB_SIZE_THRESHOLD) -> np.ndarray:
    """Drop 6-connected blobs with ``<= max_size`` voxels, but never the protected blob; returns uint8 0/1.

    Same voxels as upstream img_utils.remove_small_blobs(mask3d, threshold=max_size), which relabels blob by blob
    over the whole volume (minutes for thousands of blobs); here one labelling pass and a bincount.

    Upstream's protected blob: take the second-largest entry of the label counts *including the background
    count* and protect the lowest label index having exactly that count. Normally that is the largest blob (so
    at least one blob survives); ties go to the lowest label, i.e. the blob met first in C scan order. If some blob
    is bigger than the background, the "second largest" count is the background's (or a tie), and then no blob
    may be protected -- reproduced as is. An empty mask comes back empty.

    Upstream returns the int32 label array set to 0/1 (or the input unchanged when there is no blob); the values
    are the same here, the dtype of the written file is chosen by the writer.
    """
    labels, counts = _blob_sizes(mask3d)
    if len(counts) <= 1:
        return (mask3d != 0).astype(np.uint8)
    second_largest_count = np.sort(counts)[-2]
    protected_label = int(np.flatnonzero(counts == second_largest_count)[0])
    keep = counts > max_size
    keep[protected_label] = True
    keep[0] = False  # the background stays background whatever its count
    return keep.astype(np.uint8)[labels]
