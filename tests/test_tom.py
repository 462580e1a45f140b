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


@pytest.fixture(scope="module")
def expected(subject, request) -> np.ndarray:
    """Upstream's TOMs for the subject: (X, Y, Z, 3 x 72), as bin/TractSeg writes them."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        return upstream_run(monkeypatch, subject[0], weights_dir(request.config), SIZE, "TOM", subject[1])


def compare(ours: np.ndarray, theirs: np.ndarray) -> tuple[float, int, int]:
    """(max abs difference where both are nonzero, voxels nonzero on one side only, voxels nonzero on both)."""
    ours_on, theirs_on = np.any(ours != 0, axis=-1), np.any(theirs != 0, axis=-1)
    both = ours_on & theirs_on
    worst = float(np.abs(ours[both] - theirs[both]).max()) if both.any() else 0.0
    return worst, int((ours_on != theirs_on).sum()), int(both.sum())


def test_tom_equals_upstream_without_jax(tom_bundle, subject, expected, tmp_path):
    """Our CLI in a process where jax/torch/export cannot be imported, against upstream's run_tractseg. With
    ``--flip``, which upstream 2.10 accepts and never applies (Config.FLIP_OUTPUT_PEAKS is not read): the outputs
    must still equal upstream's."""
    peaks, masks = subject
    out = tmp_path / "out"
    done = run_module("runtime.run", str(peaks), "-o", str(out), "--artifacts", str(tom_bundle),
                      "--output_type", "TOM", "--tract_segmentations_path", str(masks), "--flip", "--quiet",
                      timeout=600)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (out / "TOM").iterdir()) == sorted(f"{b}.nii.gz" for b in TOM.bundles)
    worst, mismatched, inside = 0.0, 0, 0
    for index, name in enumerate(TOM.bundles):
        ours, image = read(out / "TOM" / f"{name}.nii.gz")
        theirs = expected[..., 3 * index:3 * index + 3]
        assert ours.shape == (*SHAPE, 3) and ours.dtype == np.float32 == theirs.dtype
        assert np.allclose(image.affine, FLIPPED)
        bundle_worst, bundle_mismatched, bundle_inside = compare(ours, theirs)
        worst, mismatched, inside = max(worst, bundle_worst), mismatched + bundle_mismatched, inside + bundle_inside
        on = np.any(ours != 0, axis=-1)
        np.testing.assert_allclose(np.linalg.norm(ours[on], axis=-1), 1.0, atol=1e-5)
        if name in EMPTY:
            assert not ours.any()
    print(f"TOM parity: max abs {worst:.2e} over {inside} voxels, {mismatched} nonzero on one side only")
    assert mismatched == 0, f"{mismatched} voxels nonzero on one side only"
    assert worst <= 1e-4, worst
    assert inside > 0.2 * len(TOM.bundles) * np.prod(SHAPE) * 0.3  # not vacuous: most masked voxels are set
    assert expected.std() > 0.3  # the unit vectors really vary


def test_pipeline_api_one_part_at_a_time(tom_bundle, subject, expected):
    """TractSegPipeline for TOM: a TOMResult with (X, Y, Z, 3) TOMs equal to upstream's; parts load on demand,
    one at a time."""
    from runtime.pipeline import TractSegPipeline
    from runtime.tom import TOMResult

    pipeline = TractSegPipeline.open(tom_bundle, output_type="TOM", warn_demo=False)
    assert pipeline.part == 0 and set(pipeline.self_check) == {"part1"}
    result = pipeline.predict(subject[0], masks=subject[1])
    assert isinstance(result, TOMResult) and result.slices is None  # nothing run yet
    for part in (2, 0, 3):  # out of order: each asks for its part's model
        name = TOM.parts[part].bundles[1]
        index = TOM.bundles.index(name)
        tom = result.tom(name)
        assert pipeline.part == part and tom.shape == (*SHAPE, 3) and tom.dtype == np.float32
        worst, mismatched, inside = compare(tom, expected[..., 3 * index:3 * index + 3])
        assert mismatched == 0 and worst <= 1e-4 and inside > 0
        assert result.raw(name).shape == (*SHAPE, 3) and np.abs(result.raw(name)).max() > 1  # unnormalised
    assert set(pipeline.self_check) == {"part1", "part3", "part4"}
    assert result.slices.slices == 3 * SIZE  # three parts ran, each once, on the coronal slices only


def test_export_refuses_incomplete_weights_dir(tmp_path, capsys, request):
    from export.__main__ import main

    weights = weights_dir(request.config)
    folder = tmp_path / "w"
    folder.mkdir()
    for part in TOM.parts[:3]:
        (folder / part.local_name).symlink_to(weights / part.local_name)
    assert main(["--task", "TOM", "--weights-dir", str(folder), "--out", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(folder / TOM.parts[3].local_name) in err[0] and "no such file" in err[0]
    assert main(["--task", "TOM", "--weights", str(weights / TOM.parts[0].local_name), "--out",
                 str(tmp_path / "b")]) == 1
    assert "--weights-dir" in capsys.readouterr().err
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.partial").exists()


def test_one_model_manifest_without_the_new_fields_reads_as_before(tract_small):
    """A bundle exported before TOM existed (no channels_per_bundle / linear / part, no parts) still loads."""
    from runtime.models.manifest import _from_fields
    from runtime.models.manifest_schema import parse_manifest

    raw = json.loads((Path(tract_small) / "manifest.json").read_text())
    for key in ("channels_per_bundle", "linear", "part"):
        raw["model"].pop(key)
    manifest = _from_fields(Path(tract_small), parse_manifest(raw, Path(tract_small) / "manifest.json", 1, 9))
    assert manifest.model.channels_per_bundle == 1 and not manifest.model.linear and manifest.parts == ()
    assert manifest.n_classes == 72 and manifest.artifact("onnx").path == "model.onnx"


def test_manifest_parts_checked(tom_bundle):
    from runtime.errors import ArtifactError
    from runtime.models.manifest_schema import parse_manifest

    raw = json.loads((tom_bundle / "manifest.json").read_text())
    parse_manifest(raw, tom_bundle / "manifest.json", 1, 9)
    raw["parts"][0], raw["parts"][1] = raw["parts"][1], raw["parts"][0]
    with pytest.raises(ArtifactError, match="parts bundles, in order"):
        parse_manifest(raw, tom_bundle / "manifest.json", 1, 9)
    raw["parts"][0]["model"]["n_classes"] = 55
    with pytest.raises(ArtifactError, match=r"parts\[0\]\.model"):
        parse_manifest(raw, tom_bundle / "manifest.json", 1, 9)


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


def test_study_runner_tom_and_dm_equal_single_runs(tom_bundle, tmp_path, request):
    """runtime.cohort --output_type TOM over two subjects, each reading the masks in its own output folder
    (<OUTROOT>/<subject>/bundle_segmentations, upstream's default), then --output_type dm_regression --rescale_dm
    on the same study: every file equals runtime.run's for that subject, byte for byte in the data."""
    import subprocess
    import sys

    from runtime.run import main
    from tests.run_support import REPO

    pytest.importorskip("distributed", reason="the [cohort] extra (Dask) is not installed")
    checkpoint = weights_dir(request.config) / model_for("dm_regression").local_name
    dm_bundle = export_bundle(request.config, "dm_regression", ["--weights", str(checkpoint)], SIZE)
    study, outroot = tmp_path / "study", tmp_path / "outroot"
    for index, sid in enumerate(("sub-01", "sub-02")):
        save_peaks(study / sid / "dwi" / f"{sid}_peaks.nii.gz", synthetic_peaks(SHAPE, seed=20 + index), FLIPPED)
        write_masks(outroot / sid / "bundle_segmentations", TOM.bundles, SHAPE, FLIPPED, seed=index)
    for output_type, bundle, extra, folder in (("TOM", tom_bundle, [], "TOM"),
                                               ("dm_regression", dm_bundle, ["--rescale_dm"], "dm_regression")):
        done = subprocess.run([sys.executable, "-m", "runtime.cohort", str(study), "-o", str(outroot), "--artifacts",
                               str(bundle), "--output_type", output_type, *extra, "--workers", "0", "--quiet"],
                              cwd=REPO, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        for sid in ("sub-01", "sub-02"):
            single = tmp_path / f"single-{output_type}-{sid}"
            masks = (["--tract_segmentations_path", str(outroot / sid / "bundle_segmentations")]
                     if output_type == "TOM" else [])
            assert main([str(study / sid / "dwi" / f"{sid}_peaks.nii.gz"), "-o", str(single), "--artifacts",
                         str(bundle), "--output_type", output_type, *extra, *masks, "--quiet"]) == 0
            names = sorted(p.name for p in (single / folder).iterdir())
            assert names == sorted(p.name for p in (outroot / sid / folder).iterdir()) and len(names) == 72
            for name in names:
                assert np.array_equal(read(outroot / sid / folder / name)[0], read(single / folder / name)[0]), name


def test_model_rows_benchmark_gives_a_row_per_part_and_backend(tom_bundle, tmp_path):
    """python -m benchmarks.model_rows on the TOM bundle: one row per part and installed backend, each drift against
    the live model's stored outputs within the export's linear-output gate (1e-4)."""
    from benchmarks.model_rows import main as model_rows
    from runtime.network.backends import is_installed

    out = tmp_path / "rows.json"
    assert model_rows([str(tom_bundle), "--repeats", "1", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    backends = [b for b in ("onnxruntime", "openvino") if is_installed(b)]
    assert [(r["model"], r["backend"]) for r in rows] == [(f"TOM part{i}", b) for i in range(1, 5) for b in backends]
    assert all(0 < r["drift_vs_live_jax_check_batch"] <= 1e-4 and r["median_ms_per_batch"] > 0 for r in rows)
