"""runtime.run --statistics / --preview end to end: statistics.json checked against numbers computed here from the
written masks, the --get_probabilities file and the affine (non-isotropic, flipped); the preview looked at."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from runtime.run import main
from tests.run_support import save_peaks, synthetic_peaks

# 1.5 x 2.0 x 2.5 mm voxels, x and z stored flipped (negative diagonal entries), no rotation
AFFINE = np.array([[-1.5, 0, 0, 60.0], [0, 2.0, 0, -90.0], [0, 0, -2.5, 70.0], [0, 0, 0, 1]])


@pytest.fixture()
def qc_run(tract_small, tmp_path):
    peaks = save_peaks(tmp_path / "sub-07_peaks.nii.gz", synthetic_peaks((24, 26, 20), seed=7), AFFINE)
    out = tmp_path / "out"
    assert main([str(peaks), "-o", str(out), "--artifacts", tract_small, "--quiet", "--backend", "onnxruntime",
                 "--statistics", "--preview"]) == 0
    assert main([str(peaks), "-o", str(tmp_path / "prob"), "--artifacts", tract_small, "--quiet", "--backend",
                 "onnxruntime", "--get_probabilities", "--single_output_file", "--statistics"]) == 0
    return peaks, out, tmp_path / "prob"


def test_statistics_equal_numbers_from_the_written_masks(qc_run):
    peaks, out, prob_dir = qc_run
    stats = json.loads((out / "statistics.json").read_text())
    probabilities = np.asarray(nib.load(prob_dir / "bundle_segmentations.nii.gz").dataobj)
    bundles = [k for k in stats if k != "_meta"]
    assert len(bundles) == 72 and stats["_meta"]["kind"] == "masks"
    voxel_ml = 1.5 * 2.0 * 2.5 / 1000
    nonempty = 0
    for index, name in enumerate(bundles):
        image = nib.load(out / "bundle_segmentations" / f"{name}.nii.gz")
        assert np.allclose(image.affine, AFFINE)
        mask = np.asarray(image.dataobj) > 0
        got = stats[name]
        assert got["voxels"] == int(mask.sum())
        assert got["volume_ml"] == pytest.approx(mask.sum() * voxel_ml, abs=1e-4)  # rounded to 4 decimals
        if not mask.any():
            assert got["centroid_mm"] is None and got["bbox_voxels"] is None and got["mean_probability"] is None
            continue
        nonempty += 1
        where = np.argwhere(mask)
        centroid = nib.affines.apply_affine(AFFINE, where.mean(axis=0))
        assert got["centroid_mm"] == pytest.approx(centroid.tolist(), abs=1e-3)  # rounded to 3 decimals
        assert got["bbox_voxels"] == [[int(lo), int(hi) + 1] for lo, hi in zip(where.min(0), where.max(0))]
        assert got["mean_probability"] == pytest.approx(float(probabilities[..., index][mask].mean()), abs=1e-6)
    assert nonempty > 5
    prob_stats = json.loads((prob_dir / "statistics.json").read_text())
    assert prob_stats["_meta"]["kind"] == "probabilities" and prob_stats["_meta"]["threshold"] == 0.5
    above = probabilities[..., 0] > 0.5
    assert prob_stats[bundles[0]]["voxels_above_threshold"] == int(above.sum())


def test_preview_shows_the_bundles(qc_run):
    from PIL import Image

    _, out, _ = qc_run
    path = out / "preview.png"
    assert 10_000 < path.stat().st_size < 1_000_000
    picture = np.asarray(Image.open(path).convert("RGB"))
    assert picture.shape[0] >= 300 and picture.shape[1] >= 600
    colours = {tuple(c) for c in picture.reshape(-1, 3)[::7]}
    assert len(colours) > 50, "not blank"


def test_api_statistics_equal_the_cli_file(qc_run, tract_small):
    from runtime import TractSegPipeline

    peaks, out, _ = qc_run
    document = TractSegPipeline.open(tract_small, backend="onnxruntime").predict(peaks).statistics()
    written = json.loads((out / "statistics.json").read_text())
    assert document.keys() == written.keys()
    # what only a run knows: the demo weights and its orientation check (predict does not check)
    run_notes = {key: written["_meta"].pop(key) for key in ("demo_weights", "orientation")}
    assert run_notes["demo_weights"] is True and run_notes["orientation"]["flip"] in ("none", "x", "y", "z")
    assert document == written  # _meta included: subject, model and source as the command line records them
