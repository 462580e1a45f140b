"""TOM (--output_type TOM): the four part models exported as one bundle and run by the JAX-free runtime, equal to
upstream's own code on identical weights (upstream-format checkpoints, upstream's network with nearest
upsampling), on a flipped 2 mm volume at cube size 16; bad masks and mismatched bundles refused.

Criteria (issue 17): per bundle, where both are nonzero the unit vectors differ by at most 1e-4; the nonzero voxel
sets are equal (counted: TOM has no threshold, so the only tie would be an output of exactly zero length).
"""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from runtime.models.bundles import model_for
from runtime.models.manifest import load_manifest
from tests.no_jax import run_module
from tests.run_support import read, refused, save_peaks, synthetic_peaks
from tests.tom_support import FLIPPED, export_bundle, upstream_run, weights_dir, write_masks

SIZE = 16
SHAPE = (22, 26, 19)
TOM = model_for("TOM")
EMPTY = ("CA",)  # an all-zero mask: accepted, as upstream, and that bundle's TOM is zero


@pytest.fixture(scope="module")
def tom_bundle(request) -> Path:
    return export_bundle(request.config, "TOM", ["--weights-dir", str(weights_dir(request.config))], SIZE)


@pytest.fixture(scope="module")
def subject(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tom")
    peaks = save_peaks(root / "peaks.nii.gz", synthetic_peaks(SHAPE, seed=7), FLIPPED)
    return peaks, write_masks(root / "masks", TOM.bundles, SHAPE, FLIPPED, empty=EMPTY)


def test_manifest_holds_four_parts(tom_bundle):
    manifest = load_manifest(tom_bundle)
    assert manifest.task == "TOM" and manifest.bundles == TOM.bundles and not manifest.artifacts
    assert [p.model.part for p in manifest.parts] == ["Part1", "Part2", "Part3", "Part4"]
    digests = set()
    for index, part in enumerate(manifest.parts):
        assert part.bundles == TOM.parts[index].bundles and part.n_classes == 54 and part.model.linear
        onnx = part.artifact("onnx")
        assert onnx.path == f"part{index + 1}/model.onnx"
        digests.add(manifest.files[onnx.path].sha256)
        for figures in onnx.drift.values():  # the gate on raw outputs, recorded with its figure
            assert figures["tolerance"] == 1e-4 and 0 < figures["max_abs"] <= 1e-4
        assert part.contains["sigmoid"] is False
    assert len(digests) == 4
    raw = json.loads((tom_bundle / "manifest.json").read_text())
    assert "artifacts" not in raw and len(raw["parts"]) == 4


def test_tom_equals_upstream_without_jax(tom_bundle, subject, tmp_path, monkeypatch, request):
    """Our CLI in a process where jax/torch/export cannot be imported, against upstream's run_tractseg."""
    peaks, masks = subject
    out = tmp_path / "out"
    done = run_module("runtime.run", str(peaks), "-o", str(out), "--artifacts", str(tom_bundle),
                      "--output_type", "TOM", "--tract_segmentations_path", str(masks), "--quiet", timeout=600)
    assert done.returncode == 0, done.stderr
    expected = upstream_run(monkeypatch, peaks, weights_dir(request.config), SIZE, "TOM", masks)
    assert sorted(p.name for p in (out / "TOM").iterdir()) == sorted(f"{b}.nii.gz" for b in TOM.bundles)
    worst, mismatched, inside = 0.0, 0, 0
    for index, name in enumerate(TOM.bundles):
        ours, image = read(out / "TOM" / f"{name}.nii.gz")
        theirs = expected[..., 3 * index:3 * index + 3]
        assert ours.shape == (*SHAPE, 3) and ours.dtype == np.float32 == theirs.dtype
        assert np.allclose(image.affine, FLIPPED)
        ours_on, theirs_on = np.any(ours != 0, axis=-1), np.any(theirs != 0, axis=-1)
        mismatched += int((ours_on != theirs_on).sum())
        both = ours_on & theirs_on
        inside += int(both.sum())
        if both.any():
            worst = max(worst, float(np.abs(ours[both] - theirs[both]).max()))
            np.testing.assert_allclose(np.linalg.norm(ours[both], axis=-1), 1.0, atol=1e-5)
        if name in EMPTY:
            assert not ours.any()
    assert mismatched == 0, f"{mismatched} voxels nonzero on one side only"
    assert worst <= 1e-4, worst
    assert inside > 0.2 * len(TOM.bundles) * np.prod(SHAPE) * 0.3  # not vacuous: most masked voxels are set
    assert expected.std() > 0.3  # the unit vectors really vary


@pytest.fixture()
def masks_copy(subject, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(subject[1], tmp_path / "masks"))


@pytest.mark.parametrize("damage, expect", [
    ("missing", "bundle mask missing"),
    ("empty", "bundle mask is an empty file"),
    ("shape", "bundle mask has shape"),
    ("affine", "affine differs"),
])
def test_bad_masks_refused(tom_bundle, subject, masks_copy, tmp_path, capsys, no_network, damage, expect):
    peaks = subject[0]
    target = masks_copy / "CST_left.nii.gz"
    if damage == "missing":
        target.unlink()
    elif damage == "empty":
        target.write_bytes(b"")
    elif damage == "shape":
        nib.save(nib.Nifti1Image(np.ones((10, 10, 10), np.uint8), FLIPPED), target)
    else:
        shifted = FLIPPED.copy()
        shifted[0, 3] += 2.0
        nib.save(nib.Nifti1Image(np.ones(SHAPE, np.uint8), shifted), target)
    line = refused(capsys, tmp_path, peaks, "-o", tmp_path / "out", "--artifacts", tom_bundle, "--output_type", "TOM",
                   "--tract_segmentations_path", masks_copy, expect=expect)
    assert str(target) in line


def test_default_masks_folder_is_output_bundle_segmentations(tom_bundle, subject, tmp_path, capsys, no_network):
    refused(capsys, tmp_path, subject[0], "-o", tmp_path / "out", "--artifacts", tom_bundle, "--output_type", "TOM",
            expect=str(tmp_path / "out" / "bundle_segmentations"))


def test_tom_bundle_refused_for_tract_segmentation_and_reverse(tom_bundle, tract_small, subject, tmp_path, capsys):
    peaks, masks = subject
    refused(capsys, tmp_path, peaks, "-o", tmp_path / "out", "--artifacts", tom_bundle,
            expect="bundle is TOM/TractQuerier+ with 216 classes, but tract_segmentation")
    refused(capsys, tmp_path, peaks, "-o", tmp_path / "out", "--artifacts", tract_small, "--output_type", "TOM",
            "--tract_segmentations_path", masks, expect="but TOM/TractQuerier+ with 216 classes was requested")


def test_single_output_file_refused(tom_bundle, subject, tmp_path, capsys):
    refused(capsys, tmp_path, subject[0], "-o", tmp_path / "out", "--artifacts", tom_bundle, "--output_type", "TOM",
            "--single_output_file", code=2, expect="--single_output_file is not supported for TOM")
