"""Bad input, bundle or output location: one line on stderr, exit status 1 (2 for a bad command line), nothing
written. Every check runs before the network, so these runs are quick."""
from __future__ import annotations

import gzip
import json
import os

import nibabel as nib
import numpy as np
import pytest

from runtime.models.bundles import XTRACT_BUNDLES
from runtime.run import main
from tests.run_support import LAS, copy_bundle, files_under, refused, save_peaks, synthetic_peaks


@pytest.fixture()
def good(tmp_path):
    return save_peaks(tmp_path / "in" / "peaks.nii.gz", synthetic_peaks((12, 14, 11)))


def run_args(path, tract_small, tmp_path, *extra):
    return (path, "-o", tmp_path / "out", "--artifacts", tract_small, "--quiet", *extra)


def test_3d_image(capsys, tmp_path, tract_small):
    path = save_peaks(tmp_path / "t1.nii.gz", synthetic_peaks()[..., 0])
    refused(capsys, tmp_path, *run_args(path, tract_small, tmp_path), expect="expected a 4D peak image")


def test_5d_image(capsys, tmp_path, tract_small):
    path = save_peaks(tmp_path / "x.nii.gz", synthetic_peaks()[..., None])
    refused(capsys, tmp_path, *run_args(path, tract_small, tmp_path), expect="5D")


def test_last_dimension_not_9(capsys, tmp_path, tract_small):
    path = save_peaks(tmp_path / "six.nii.gz", synthetic_peaks()[..., :6])
    refused(capsys, tmp_path, *run_args(path, tract_small, tmp_path), expect="(X, Y, Z, 9)")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_affine(capsys, tmp_path, tract_small, bad):
    data = synthetic_peaks()
    affine = LAS.copy()
    affine[1, 3] = bad
    header = nib.Nifti1Header()
    header.set_data_shape(data.shape)
    header.set_data_dtype(np.float32)
    header.set_sform(affine, code=2)  # the sform is the affine nibabel reports
    path = tmp_path / "affine.nii.gz"
    nib.save(nib.Nifti1Image(data, None, header=header), path)
    assert not np.isfinite(nib.load(path).affine).all()
    refused(capsys, tmp_path, *run_args(path, tract_small, tmp_path), expect="affine")


def test_all_zero_volume(capsys, tmp_path, tract_small):
    path = save_peaks(tmp_path / "zero.nii.gz", np.zeros((10, 11, 12, 9), np.float32))
    refused(capsys, tmp_path, *run_args(path, tract_small, tmp_path), expect="all voxels are zero")


def test_nan_only_volume(capsys, tmp_path, tract_small):
    path = save_peaks(tmp_path / "nan.nii.gz", np.full((10, 11, 12, 9), np.nan, np.float32))
    refused(capsys, tmp_path, *run_args(path, tract_small, tmp_path), expect="all voxels are zero")


def test_infinite_values(capsys, tmp_path, tract_small):
    data = synthetic_peaks()
    data[5, 5, 5, 0] = np.inf
    path = save_peaks(tmp_path / "inf.nii.gz", data)
    refused(capsys, tmp_path, *run_args(path, tract_small, tmp_path), expect="infinite")


def test_missing_file(capsys, tmp_path, tract_small):
    refused(capsys, tmp_path, *run_args(tmp_path / "nope.nii.gz", tract_small, tmp_path), expect="no such file")


def test_unreadable_path_is_a_directory(capsys, tmp_path, tract_small):
    (tmp_path / "dir.nii.gz").mkdir()
    refused(capsys, tmp_path, *run_args(tmp_path / "dir.nii.gz", tract_small, tmp_path), expect="not a regular file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_permissions(capsys, tmp_path, tract_small, good):
    good.chmod(0)
    refused(capsys, tmp_path, *run_args(good, tract_small, tmp_path), expect="cannot read")


@pytest.mark.parametrize("keep", [0.5, 0.02], ids=["half", "header-only"])
def test_truncated_file(capsys, tmp_path, tract_small, good, keep):
    raw = good.read_bytes()
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(raw[: int(len(raw) * keep)])
    refused(capsys, tmp_path, *run_args(path, tract_small, tmp_path), expect=str(path))


def test_truncated_uncompressed_file(capsys, tmp_path, tract_small, good):
    path = tmp_path / "cut.nii"
    path.write_bytes(gzip.decompress(good.read_bytes())[:-1000])
    refused(capsys, tmp_path, *run_args(path, tract_small, tmp_path), expect="truncated")


@pytest.mark.parametrize("name,content", [("text.nii.gz", b"not an image at all\n" * 20),
                                          ("random.nii", bytes(range(256)) * 4),
                                          ("peaks.txt", b"1 2 3\n")])
def test_not_a_nifti(capsys, tmp_path, tract_small, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    refused(capsys, tmp_path, *run_args(path, tract_small, tmp_path), expect=str(path))


def test_other_image_format(capsys, tmp_path, tract_small):
    path = tmp_path / "peaks.mgz"
    nib.save(nib.MGHImage(synthetic_peaks(), LAS), path)
    refused(capsys, tmp_path, *run_args(path, tract_small, tmp_path), expect="not a NIfTI")


def test_integer_data(capsys, tmp_path, tract_small):
    path = save_peaks(tmp_path / "int.nii.gz", (synthetic_peaks() * 100).astype(np.int16))
    refused(capsys, tmp_path, *run_args(path, tract_small, tmp_path), expect="integer data")


def test_missing_bundle(capsys, tmp_path, good):
    refused(capsys, tmp_path, *run_args(good, tmp_path / "no-bundle", tmp_path), expect="python -m export")


def test_missing_artifact_file(capsys, tmp_path, tract_small, good):
    bundle = copy_bundle(tract_small, tmp_path / "bundle", with_artifact=False)
    refused(capsys, tmp_path, *run_args(good, bundle, tmp_path), expect="but missing (incomplete bundle)")


def test_tampered_artifact(capsys, tmp_path, tract_small, good):
    bundle = copy_bundle(tract_small, tmp_path / "bundle")
    with open(bundle / "model.onnx", "r+b") as f:
        f.seek(os.path.getsize(bundle / "model.onnx") // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    refused(capsys, tmp_path, *run_args(good, bundle, tmp_path), expect="tampered")


def test_truncated_artifact(capsys, tmp_path, tract_small, good):
    bundle = copy_bundle(tract_small, tmp_path / "bundle")
    with open(bundle / "model.onnx", "r+b") as f:
        f.truncate(1000)
    refused(capsys, tmp_path, *run_args(good, bundle, tmp_path), expect="size")


def test_manifest_of_another_task(capsys, tmp_path, endings_small, good):
    refused(capsys, tmp_path, *run_args(good, endings_small, tmp_path),
            expect="bundle is endings_segmentation/TractQuerier+ with 144 classes")


def test_manifest_with_another_class_count(capsys, tmp_path, tract_small, good):
    bundle = copy_bundle(tract_small, tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["model"].update(n_classes=42, bundles=list(XTRACT_BUNDLES))
    manifest["function"]["output"]["shape"][1] = 42
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    refused(capsys, tmp_path, *run_args(good, bundle, tmp_path), expect="42 classes")


def test_corrupt_manifest(capsys, tmp_path, tract_small, good):
    bundle = copy_bundle(tract_small, tmp_path / "bundle")
    (bundle / "manifest.json").write_text("{ not json")
    refused(capsys, tmp_path, *run_args(good, bundle, tmp_path), expect="not valid JSON")


def test_output_dir_under_a_file(capsys, tmp_path, tract_small, good):
    (tmp_path / "afile").write_text("x")
    refused(capsys, tmp_path, good, "-o", tmp_path / "afile" / "out", "--artifacts", tract_small,
            expect="not a directory")


def test_output_dir_on_a_read_only_place(capsys, tmp_path, tract_small, good):
    target = "/sys/tractseg-aot-out"
    try:
        os.mkdir(target)
        os.rmdir(target)
        pytest.skip("/sys is writable here")
    except OSError:
        pass
    refused(capsys, tmp_path, good, "-o", target, "--artifacts", tract_small, expect="not writable")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes whatever the mode")
def test_output_dir_without_write_permission(capsys, tmp_path, tract_small, good):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    refused(capsys, tmp_path, good, "-o", locked / "out", "--artifacts", tract_small, expect="not writable")


def test_report_location_unwritable(capsys, tmp_path, tract_small, good):
    (tmp_path / "afile").write_text("x")
    refused(capsys, tmp_path, *run_args(good, tract_small, tmp_path, "--report", tmp_path / "afile" / "r.json"),
            expect="not a directory")


def test_existing_output_is_refused(capsys, tmp_path, tract_small, good):
    existing = tmp_path / "out" / "bundle_segmentations" / "CA.nii.gz"
    existing.parent.mkdir(parents=True)
    existing.write_bytes(b"old")
    assert main([str(a) for a in run_args(good, tract_small, tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "CA.nii.gz already exist" in err and "--force" in err
    assert [p.name for p in files_under(tmp_path / "out")] == ["CA.nii.gz"] and existing.read_bytes() == b"old"


def test_cuda_without_gpu_or_cuda_artifact(capsys, tmp_path, tract_small, good):
    refused(capsys, tmp_path, *run_args(good, tract_small, tmp_path, "--device", "cuda"), expect="cuda")


@pytest.mark.parametrize("extra,expect", [(["--nr_cpus", "0"], "--nr_cpus"),
                                          (["--output_type", "endings_segmentation", "--tract_definition",
                                            "xtract"], "xtract"),
                                          (["--backend", "torch"], "invalid choice"),
                                          (["--output_type", "peaks"], "invalid choice")])
def test_bad_command_line(capsys, tmp_path, tract_small, good, extra, expect):
    refused(capsys, tmp_path, *run_args(good, tract_small, tmp_path, *extra), expect=expect, code=2)
