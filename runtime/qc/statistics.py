"""Per-bundle statistics of one run, written as ``statistics.json`` beside the outputs.

Mirrors the shape of TotalSegmentator's ``--statistics`` file (``statistics.json``: one key per structure, in
the model's order, each holding that structure's numbers) and adds a ``"_meta"`` key saying what the numbers
mean. TractSeg itself has no such output.

Everything is measured on the input grid (the grid the output NIfTIs are written on), with the input affine:

* ``voxels``: count of nonzero mask voxels (int)
* ``volume_ml``: ``voxels * |det(affine[:3, :3])| / 1000``, rounded to 4 decimals (0.1 mm^3)
* ``centroid_mm``: the affine applied to the mean voxel index (world coordinates of the affine's space, mm),
  each rounded to 3 decimals (1 um); None for an empty mask
* ``bbox_voxels``: ``[[x0, x1], [y0, y1], [z0, z1]]`` voxel indices, half-open ``[min, max + 1)`` like
  :func:`runtime.io.geometry.crop_to_nonzero`; None for an empty mask
* ``mean_probability``: mean of the probability inside the mask, rounded to 6 decimals; None for an empty mask
  or when no probability is given

``--get_probabilities`` runs write no masks; :func:`probability_statistics` then counts voxels with
``probability > threshold`` (strict, like the tract binarisation in :mod:`runtime.outputs.postprocess`).

numpy only; no per-voxel index arrays are built (projections along axes give counts, bbox and centroid).
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from runtime.io.atomic import write_text_atomic

VOLUME_DECIMALS = 4
CENTROID_DECIMALS = 3
PROBABILITY_DECIMALS = 6
META_KEY = "_meta"


def voxel_volume_mm3(affine: np.ndarray) -> float:
    """Volume of one voxel in mm^3: ``|det(affine[:3, :3])|`` (shears and rotations included)."""
    return float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3])))


def _check(volume: np.ndarray, name: str) -> None:
    if volume.ndim != 3:
        raise ValueError(f"statistics: {name} must be 3D (X, Y, Z), got shape {volume.shape}")


def _counts_bbox_centroid(inside: np.ndarray, affine: np.ndarray) -> tuple[int, list[list[int]] | None,
                                                                          list[float] | None]:
    """Voxel count, half-open bbox and world centroid of a boolean volume, from its three axis projections."""
    voxels = int(np.count_nonzero(inside))
    if voxels == 0:
        return 0, None, None
    bbox: list[list[int]] = []
    mean_index = np.empty(3, dtype=np.float64)
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        counts = inside.sum(axis=others, dtype=np.int64)
        present = np.flatnonzero(counts)
        bbox.append([int(present[0]), int(present[-1]) + 1])
        mean_index[axis] = float(np.dot(np.arange(counts.size, dtype=np.float64), counts)) / voxels
    world = np.asarray(affine, dtype=np.float64)[:3, :3] @ mean_index + np.asarray(affine, dtype=np.float64)[:3, 3]
    return voxels, bbox, [round(float(v), CENTROID_DECIMALS) for v in world]


def bundle_statistics(mask: np.ndarray, probability: np.ndarray | None, affine: np.ndarray) -> dict[str, Any]:
    """Statistics of one bundle mask (X, Y, Z; any integer/bool dtype, nonzero = inside) on the input grid.

    ``probability`` (float, same shape) is optional; when given, ``mean_probability`` is its mean inside the mask.
    Keys and rounding: see the module docstring.
    """
    _check(mask, "mask")
    inside = mask if mask.dtype == np.bool_ else mask != 0
    voxels, bbox, centroid = _counts_bbox_centroid(inside, affine)
    mean_probability: float | None = None
    if probability is not None:
        if probability.shape != mask.shape:
            raise ValueError(f"statistics: probability shape {probability.shape} != mask shape {mask.shape}")
        if voxels:
            total = np.sum(probability, where=inside, dtype=np.float64)
            mean_probability = round(float(total) / voxels, PROBABILITY_DECIMALS)
    return {
        "voxels": voxels,
        "volume_ml": round(voxels * voxel_volume_mm3(affine) / 1000.0, VOLUME_DECIMALS),
        "centroid_mm": centroid,
        "bbox_voxels": bbox,
        "mean_probability": mean_probability,
    }


def probability_statistics(probability: np.ndarray, affine: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Statistics of one bundle's probability volume (``--get_probabilities`` runs, no masks).

    ``voxels_above_threshold``: count of ``probability > threshold`` (strict); ``volume_ml_above_threshold``: that
    count times the voxel volume, in ml (4 decimals); ``mean_probability_above_threshold``: mean probability over
    those voxels (6 decimals, None when none); ``centroid_mm`` / ``bbox_voxels``: of those voxels, as in
    :func:`bundle_statistics`; ``max_probability``: the largest value (6 decimals).
    """
    _check(probability, "probability")
    above = probability > threshold
    voxels, bbox, centroid = _counts_bbox_centroid(above, affine)
    mean = None
    if voxels:
        mean = round(float(np.sum(probability, where=above, dtype=np.float64)) / voxels, PROBABILITY_DECIMALS)
    return {
        "voxels_above_threshold": voxels,
        "volume_ml_above_threshold": round(voxels * voxel_volume_mm3(affine) / 1000.0, VOLUME_DECIMALS),
        "mean_probability_above_threshold": mean,
        "centroid_mm": centroid,
        "bbox_voxels": bbox,
        "max_probability": round(float(np.max(probability)), PROBABILITY_DECIMALS) if probability.size else None,
    }


def masks_meta(**extra: Any) -> dict[str, Any]:
    """The ``_meta`` of a mask run (what the values mean); ``extra`` (subject, model, ...) is merged in."""
    return {"kind": "masks", "grid": "input", "volume_unit": "ml", "centroid_space": "world mm (input affine)",
            "bbox": "voxel indices, half-open [start, stop)", "mean_probability": "mean inside the mask",
            **extra}


def probabilities_meta(threshold: float = 0.5, **extra: Any) -> dict[str, Any]:
    """The ``_meta`` of a ``--get_probabilities`` run: counts are of ``probability > threshold``."""
    return {"kind": "probabilities", "threshold": threshold, "threshold_rule": "probability > threshold",
            "grid": "input", "volume_unit": "ml", "centroid_space": "world mm (input affine)",
            "bbox": "voxel indices, half-open [start, stop)", **extra}


def statistics_document(per_bundle: Mapping[str, Mapping[str, Any]], meta: Mapping[str, Any]) -> dict[str, Any]:
    """TotalSegmentator's shape: one key per bundle, in the order given (bundle order), then ``"_meta"``.

    ``meta`` must say what the values mean: a ``"kind"`` of ``"masks"`` or ``"probabilities"`` (the latter with
    a ``"threshold"``); :func:`masks_meta` / :func:`probabilities_meta` build one.
    """
    kind = meta.get("kind")
    if kind not in ("masks", "probabilities"):
        raise ValueError(f"statistics: _meta 'kind' must be 'masks' or 'probabilities', got {kind!r}")
    if kind == "probabilities" and "threshold" not in meta:
        raise ValueError("statistics: _meta of kind 'probabilities' needs a 'threshold'")
    if META_KEY in per_bundle:
        raise ValueError(f"statistics: {META_KEY!r} is reserved and cannot be a bundle name")
    document: dict[str, Any] = {name: dict(values) for name, values in per_bundle.items()}
    document[META_KEY] = dict(meta)
    return document


def write_statistics(document: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the JSON atomically (:func:`write_text_atomic`); key order is kept (bundle order). NaN/inf refused."""
    return write_text_atomic(path, json.dumps(document, indent=1, allow_nan=False) + "\n")


def read_statistics(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``statistics.json``; ValueError with one line naming the file when it is not one."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable statistics.json ({' '.join(str(error).split())})") from None
    if not isinstance(document, dict) or not isinstance(document.get(META_KEY), dict):
        raise ValueError(f"{path}: not a statistics.json (no {META_KEY!r} object)")
    return document


class StatisticsAccumulator:
    """Collects per-bundle statistics as the caller writes each bundle, then writes one document.

    ``add(name, mask, probability)`` for mask runs, ``add_probability(name, probability)`` for
    ``--get_probabilities`` runs; :meth:`document` / :meth:`write` finish.
    """

    def __init__(self, affine: np.ndarray, meta: Mapping[str, Any]) -> None:
        self.affine = np.asarray(affine, dtype=np.float64)
        self.meta = dict(meta)
        self.per_bundle: dict[str, dict[str, Any]] = {}

    def add(self, name: str, mask: np.ndarray, probability: np.ndarray | None = None) -> dict[str, Any]:
        self.per_bundle[name] = bundle_statistics(mask, probability, self.affine)
        return self.per_bundle[name]

    def add_probability(self, name: str, probability: np.ndarray) -> dict[str, Any]:
        self.per_bundle[name] = probability_statistics(probability, self.affine, self.meta.get("threshold", 0.5))
        return self.per_bundle[name]

    def document(self) -> dict[str, Any]:
        return statistics_document(self.per_bundle, self.meta)

    def write(self, path: str | os.PathLike[str]) -> Path:
        return write_statistics(self.document(), path)
