"""runtime.qc.statistics against values computed independently (np.argwhere, nibabel.affines) from masks written to
NIfTI and read back, on a non-isotropic grid with a flipped (negative diagonal) affine."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from runtime.qc.statistics import (StatisticsAccumulator, bundle_statistics, masks_meta, probabilities_meta,
                                probability_statistics, read_statistics, statistics_document, write_statistics)

SHAPE = (23, 31, 17)
# Non-isotropic voxels, x and z flipped (negative diagonal), a translation: like a LAS/LPI scanner grid.
AFFINE = np.array([[-1.5, 0.0, 0.0, 40.0],
                   [0.0, 2.0, 0.0, -60.0],
                   [0.0, 0.0, -2.5, 30.0],
                   [0.0, 0.0, 0.0, 1.0]])
VOLUME_ML_TOL = 1e-4 / 2 + 1e-12       # volume_ml is rounded to 4 decimals
CENTROID_TOL = 1e-3 / 2 + 1e-9         # centroid_mm to 3
PROBABILITY_TOL = 1e-6 / 2 + 1e-12     # mean probability to 6


def synthetic(seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Three bundles (an irregular blob, a single voxel in a corner, an empty one) and a probability volume."""
    rng = np.random.default_rng(seed)
    blob = np.zeros(SHAPE, dtype=np.uint8)
    blob[3:15, 10:27, 2:9] = rng.random((12, 17, 7)) > 0.4
    corner = np.zeros(SHAPE, dtype=np.uint8)
    corner[-1, 0, -1] = 1
    empty = np.zeros(SHAPE, dtype=np.uint8)
    probability = rng.random(SHAPE).astype(np.float32)
    return {"AF_left": blob, "CA": corner, "FX_left": empty}, probability


def roundtrip(array: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    nib.save(nib.Nifti1Image(array, AFFINE), path)
    image = nib.load(path)
    return np.asarray(image.dataobj), image.affine


def expected(mask: np.ndarray, probability: np.ndarray | None, affine: np.ndarray) -> dict:
    """The same quantities, computed another way (index lists rather than projections)."""
    ijk = np.argwhere(mask != 0)
    voxel_ml = float(np.prod(nib.affines.voxel_sizes(affine))) / 1000.0
    if len(ijk) == 0:
        return {"voxels": 0, "volume_ml": 0.0, "centroid_mm": None, "bbox_voxels": None, "mean_probability": None}
    return {"voxels": len(ijk), "volume_ml": len(ijk) * voxel_ml,
            "centroid_mm": nib.affines.apply_affine(affine, ijk.mean(axis=0)),
            "bbox_voxels": [[int(lo), int(hi) + 1] for lo, hi in zip(ijk.min(axis=0), ijk.max(axis=0))],
            "mean_probability": None if probability is None
            else float(probability[tuple(ijk.T)].astype(np.float64).mean())}


def check(got: dict, want: dict) -> None:
    assert got["voxels"] == want["voxels"]
    assert got["volume_ml"] == pytest.approx(want["volume_ml"], abs=VOLUME_ML_TOL)
    assert got["bbox_voxels"] == want["bbox_voxels"]
    if want["centroid_mm"] is None:
        assert got["centroid_mm"] is None
    else:
        np.testing.assert_allclose(got["centroid_mm"], want["centroid_mm"], rtol=0, atol=CENTROID_TOL)
    if want["mean_probability"] is None:
        assert got["mean_probability"] is None
    else:
        assert got["mean_probability"] == pytest.approx(want["mean_probability"], abs=PROBABILITY_TOL)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, bool])
def test_bundle_statistics_from_nifti(tmp_path: Path, dtype: type) -> None:
    masks, probability = synthetic()
    probability_read, _ = roundtrip(probability, tmp_path / "prob.nii.gz")
    for name, mask in masks.items():
        stored = mask.astype(np.uint8 if dtype is bool else dtype)
        data, affine = roundtrip(stored, tmp_path / f"{name}.nii.gz")
        data = data.astype(bool) if dtype is bool else data
        assert data.dtype == np.dtype(dtype)
        np.testing.assert_allclose(affine, AFFINE)
        for prob in (None, probability_read):
            check(bundle_statistics(data, prob, affine), expected(data, prob, affine))


def test_flipped_affine_world_centroid_and_volume() -> None:
    """A hand-checked case: one voxel at index (2, 3, 4) lies at world (37, -54, 20); voxel volume 7.5 mm^3."""
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[2, 3, 4] = 1
    mask[2, 3, 5] = 1
    stats = bundle_statistics(mask, None, AFFINE)
    assert stats == {"voxels": 2, "volume_ml": 0.015, "centroid_mm": [37.0, -54.0, 18.75],
                     "bbox_voxels": [[2, 3], [3, 4], [4, 6]], "mean_probability": None}


def test_empty_bundle() -> None:
    stats = bundle_statistics(np.zeros(SHAPE, dtype=np.uint8), np.ones(SHAPE, np.float32), AFFINE)
    assert stats == {"voxels": 0, "volume_ml": 0.0, "centroid_mm": None, "bbox_voxels": None,
                     "mean_probability": None}


def test_probability_statistics(tmp_path: Path) -> None:
    _, probability = synthetic(1)
    probability[0, 0, 0] = 0.5                       # exactly the threshold: not counted (strict)
    data, affine = roundtrip(probability, tmp_path / "prob.nii.gz")
    stats = probability_statistics(data, affine, threshold=0.5)
    want = expected(data > 0.5, data, affine)
    assert stats["voxels_above_threshold"] == want["voxels"] == int(np.sum(probability > 0.5))
    assert stats["volume_ml_above_threshold"] == pytest.approx(want["volume_ml"], abs=VOLUME_ML_TOL)
    assert stats["mean_probability_above_threshold"] == pytest.approx(want["mean_probability"], abs=PROBABILITY_TOL)
    np.testing.assert_allclose(stats["centroid_mm"], want["centroid_mm"], atol=CENTROID_TOL)
    assert stats["bbox_voxels"] == want["bbox_voxels"]
    assert stats["max_probability"] == pytest.approx(float(data.max()), abs=PROBABILITY_TOL)
    none = probability_statistics(np.zeros(SHAPE, np.float32), affine, threshold=0.5)
    assert none["voxels_above_threshold"] == 0 and none["mean_probability_above_threshold"] is None


def test_document_order_meta_and_atomic_write(tmp_path: Path) -> None:
    masks, probability = synthetic()
    accumulator = StatisticsAccumulator(AFFINE, masks_meta(subject="sub-01", model="tract_segmentation"))
    for name in ("FX_left", "AF_left", "CA"):                # bundle order, not alphabetical
        accumulator.add(name, masks[name], probability)
    target = accumulator.write(tmp_path / "out" / "statistics.json")
    assert sorted(os.listdir(target.parent)) == ["statistics.json"]          # no temporary left
    document = json.loads(target.read_text())
    assert list(document) == ["FX_left", "AF_left", "CA", "_meta"]
    assert document["_meta"]["kind"] == "masks" and document["_meta"]["subject"] == "sub-01"
    assert document["CA"]["voxels"] == 1 and document["FX_left"]["centroid_mm"] is None
    assert read_statistics(target) == document

    probs = statistics_document({"CA": probability_statistics(probability, AFFINE, 0.3)}, probabilities_meta(0.3))
    assert probs["_meta"]["kind"] == "probabilities" and probs["_meta"]["threshold"] == 0.3
    with pytest.raises(ValueError, match="kind"):
        statistics_document({}, {"volume_unit": "ml"})
    with pytest.raises(ValueError, match="threshold"):
        statistics_document({}, {"kind": "probabilities"})


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = write_statistics(statistics_document({}, masks_meta()), tmp_path / "statistics.json")
    before = target.read_bytes()
    with pytest.raises(ValueError):                  # NaN is refused mid-write (allow_nan=False)
        write_statistics(statistics_document({"CA": {"volume_ml": float("nan")}}, masks_meta()), target)
    assert target.read_bytes() == before
    blocker = tmp_path / "taken"                     # a non-empty folder: os.replace fails after the temporary exists
    (blocker / "inside").mkdir(parents=True)
    with pytest.raises(OSError):
        write_statistics(statistics_document({}, masks_meta()), blocker)
    assert sorted(os.listdir(tmp_path)) == ["statistics.json", "taken"]
