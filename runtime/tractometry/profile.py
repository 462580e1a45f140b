"""One bundle's profile: a scalar map (e.g. FA) sampled along its streamlines, as upstream's Tractometry does it.

Mirrors (TractSeg 2.10):

* ``tractometry.evaluate_along_streamlines`` (the ``distance_map`` algorithm, upstream's only active one)
                                                                        -> :func:`profile`
* ``fiber_utils.orient_to_same_start_region``                           -> :func:`orient_to_beginnings`
* ``fiber_utils.resample_fibers`` (dipy ``ResampleFeature``, float32)    -> :func:`_resample`

Steps, in upstream's order and with upstream's libraries where it uses them: streamlines from RAS mm to voxels
(dipy ``transform_streamlines`` with the scalar map's inverse affine); beginnings dilated ``dilate`` times;
each streamline flipped unless its first point (``+0.5``, truncated) lies in the beginnings, a streamline whose
first point is outside the image dropped (all of them: :class:`InputError`, where upstream's ``map_coordinates``
fails); resampled to ``nr_points``; the map sampled with ``map_coordinates
(order=1)``; dipy ``QuickBundles(threshold=100, AveragePointwiseEuclideanMetric)``; each point assigned to its
nearest centroid point (scipy ``cKDTree``); mean and std per segment, a segment with no point taking the first
centroid's value (std 0). The per-segment sums are vectorised (``np.bincount``) instead of upstream's dict of
lists; the values agree to float64 rounding (tests/test_tractometry.py checks 1e-5 against upstream's CLI).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from scipy.ndimage import binary_dilation, map_coordinates
from scipy.spatial import cKDTree

from runtime.errors import InputError
from runtime.host import require_dipy

log = logging.getLogger("tractseg_aot")


def orient_to_beginnings(streamlines: Sequence[np.ndarray], beginnings: np.ndarray) -> list[np.ndarray]:
    """Upstream ``orient_to_same_start_region``: same ``+0.5`` / ``-0.5`` arithmetic, same truncation. A
    streamline whose first point lies outside the image is dropped, as upstream (which warns once per streamline;
    here one warning says how many); when that leaves none, :class:`InputError`."""
    shifted = [np.asarray(s) + 0.5 for s in streamlines]
    shape = beginnings.shape
    oriented = []
    for sl in shifted:
        x, y, z = (int(c) for c in sl[0])
        if 0 <= x < shape[0] and 0 <= y < shape[1] and 0 <= z < shape[2]:
            oriented.append(sl[::-1, :] if beginnings[x, y, z] == 0 else sl)
    dropped = len(shifted) - len(oriented)
    if shifted and not oriented:
        raise InputError(f"none of its {len(shifted)} streamlines starts inside the scalar map's grid {shape}")
    if dropped:
        log.warning(f"{dropped} of {len(shifted)} streamlines start outside the image; discarding them (as upstream)")
    return [np.array(sl) - 0.5 for sl in oriented]


def _resample(streamlines: Sequence[np.ndarray], nr_points: int) -> list[np.ndarray]:
    from dipy.segment.featurespeed import ResampleFeature

    feature = ResampleFeature(nb_points=nr_points)
    return [feature.extract(sl) for sl in streamlines]


def profile(streamlines: Sequence[np.ndarray], beginnings: np.ndarray, scalar: np.ndarray, affine: np.ndarray,
            nr_points: int = 100, dilate: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of ``scalar`` at ``nr_points`` segments along the bundle (upstream
    ``evaluate_along_streamlines`` with ``predicted_peaks=None``). ``streamlines`` in RAS mm, ``scalar`` already
    ``nan_to_num``-ed, ``affine`` the scalar map's."""
    require_dipy()
    from dipy.segment.clustering import QuickBundles
    from dipy.segment.metric import AveragePointwiseEuclideanMetric
    from dipy.tracking.streamline import Streamlines, transform_streamlines

    voxels = list(transform_streamlines(streamlines, np.linalg.inv(affine)))
    for _ in range(dilate):
        beginnings = binary_dilation(beginnings)
    voxels = orient_to_beginnings(voxels, beginnings.astype(np.uint8))
    resampled = _resample(voxels, nr_points)
    points = np.array(resampled)                                       # (N, nr_points, 3)
    values = map_coordinates(scalar, points.T, order=1)                # (nr_points, N)
    clusters = QuickBundles(threshold=100., metric=AveragePointwiseEuclideanMetric()).cluster(resampled)
    centroids = Streamlines(clusters.centroids)
    if len(centroids) > 1:
        log.warning(f"number of clusters > 1 ({len(centroids)})")
    _, segment = cKDTree(centroids.get_data(), 1, copy_data=True).query(resampled, k=1)  # (N, nr_points)

    flat_segment, flat_values = np.asarray(segment).ravel(), values.T.ravel()
    size = max(nr_points, int(flat_segment.max()) + 1)
    count = np.bincount(flat_segment, minlength=size)
    total = np.bincount(flat_segment, weights=flat_values, minlength=size)
    mean = np.divide(total, count, out=np.zeros(size), where=count > 0)
    square = np.bincount(flat_segment, weights=(flat_values - mean[flat_segment]) ** 2, minlength=size)
    std = np.sqrt(np.divide(square, count, out=np.zeros(size), where=count > 0))
    present = count > 0
    if present.sum() < nr_points:
        log.warning("found less than required points; filling up with centroid values (as upstream)")
        centroid_values = map_coordinates(scalar, np.array([centroids[0]]).T, order=1)[:, 0]
        missing = np.flatnonzero(~present[:nr_points])
        mean[missing], std[missing] = centroid_values[missing], 0.0
        present[missing] = True
    return mean[present], std[present]
