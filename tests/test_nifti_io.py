"""runtime.io.nifti_io: input validation, and outputs written exactly as upstream TractSeg writes them."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import runtime.io.nifti_io as nifti_io
from runtime.io.nifti_io import (InputError, default_output_dir, load_peaks, output_dtype, output_paths,
                              write_nifti_atomic)
from tests.upstream import upstream_modules

LAS_AFFINE = np.array([[-2.5, 0, 0, 90], [0, 2.5, 0, -126], [0, 0, 2.5, -72], [0, 0, 0, 1]], dtype=np.float64)


def peaks(shape: tuple[int, ...] = (6, 7, 5, 9), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.standard_normal(shape).astype(np.float32)
    data[0] = np.nan
    return data


def save(data: np.ndarray, path: Path, affine: np.ndarray = LAS_AFFINE) -> Path:
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def upstream_read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(path)
    return np.nan_to_num(image.get_fdata()).astype(np.float32), image.affine


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_load_peaks_reads_like_upstream(tmp_path: Path, suffix: str) -> None:
    path = save(peaks(), tmp_path / f"peaks{suffix}")
    data, affine = load_peaks(path)
    expected_data, expected_affine = upstream_read(path)
    assert data.dtype == np.float32 and affine.dtype == np.float64
    np.testing.assert_array_equal(data, expected_data)
    np.testing.assert_array_equal(affine, expected_affine)
    assert data[0].max() == 0 and data.flags.writeable


@pytest.mark.parametrize("stored", ["float64", "scaled_int16"])
def test_load_peaks_non_float32_storage_rounds_like_upstream(tmp_path: Path, stored: str) -> None:
    values = peaks(seed=1).astype(np.float64) / 3.0
    image = nib.Nifti1Image(values, LAS_AFFINE)
    if stored == "scaled_int16":
        image.set_data_dtype(np.int16)  # nibabel picks scl_slope / scl_inter
    path = tmp_path / "peaks.nii.gz"
    nib.save(image, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scaled integers are float data: no warning
        data, _ = load_peaks(path)
    np.testing.assert_array_equal(data, upstream_read(path)[0])


def test_load_peaks_refuses_unscaled_integers(tmp_path: Path) -> None:
    path = tmp_path / "int_peaks.nii.gz"
    image = nib.Nifti1Image(np.arange(4 * 3 * 2 * 9, dtype=np.int16).reshape(4, 3, 2, 9), LAS_AFFINE)
    nib.save(image, path)
    with pytest.raises(InputError, match="int_peaks.nii.gz: integer data"):
        load_peaks(path)


def bad_input(tmp_path: Path, case: str) -> Path:
    path = tmp_path / f"bad_{case}.nii.gz"
    if case == "missing":
        return path
    if case == "directory":
        path.mkdir()
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "not_nifti":
        path.write_bytes(gzip.compress(b"this is not an image\n" * 40))
    elif case == "not_nifti_plain":
        path = tmp_path / "bad_text.nii"
        path.write_text("hello\n" * 100)
    elif case == "mgh":
        path = tmp_path / "bad_mgh.mgz"
        nib.save(nib.MGHImage(peaks(), LAS_AFFINE), path)
    elif case in ("truncated_gz", "truncated_nii"):
        if case == "truncated_nii":
            path = tmp_path / "bad_truncated.nii"
        save(peaks((12, 12, 12, 9)), path)
        whole = path.read_bytes()
        path.write_bytes(whole[: len(whole) * 2 // 3])
    elif case == "3d":
        save(peaks((5, 6, 7)), path)
    elif case == "5d":
        save(peaks((5, 6, 7, 1, 9)), path)
    elif case == "last_dim_3":
        save(peaks((5, 6, 7, 3)), path)
    elif case == "nan_affine":
        affine = LAS_AFFINE.copy()
        affine[0, 3] = np.nan
        save(peaks(), path, affine)
    elif case == "all_zero":
        save(np.zeros((5, 6, 7, 9), np.float32), path)
    elif case == "all_nan":
        save(np.full((5, 6, 7, 9), np.nan, np.float32), path)
    elif case == "inf":
        data = peaks()
        data[2, 2, 2, 4] = -np.inf
        save(data, path)
    elif case == "beyond_float32":
        data = peaks().astype(np.float64)
        data[1, 1, 1, 1] = 1e300
        save(data, path)
    else:
        raise AssertionError(case)
    return path


@pytest.mark.parametrize("case, what", [
    ("missing", "no such file"), ("directory", "not a regular file"), ("empty", "empty file"),
    ("not_nifti", "NIfTI"), ("not_nifti_plain", "NIfTI"), ("mgh", "not a NIfTI"),
    ("truncated_gz", "truncated"), ("truncated_nii", "truncated"), ("3d", "3D"), ("5d", "5D"),
    ("last_dim_3", "(5, 6, 7, 3)"), ("nan_affine", "affine"), ("all_zero", "zero"), ("all_nan", "zero"),
    ("inf", "infinite"), ("beyond_float32", "infinite"),
])
def test_bad_inputs_raise_one_line_input_error_naming_the_file(tmp_path: Path, case: str, what: str) -> None:
    path = bad_input(tmp_path, case)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no stray numpy / nibabel warnings either
        with pytest.raises(InputError) as caught:
            load_peaks(path)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert "\n" not in message and message.startswith(str(path))
    assert what in message


def test_output_paths_match_upstream_savers(tmp_path: Path) -> None:
    _, img_utils, dataset_specific_utils = upstream_modules()
    for classes, saver, output_type, folder in (
            ("All", img_utils.save_multilabel_img_as_multiple_files, "tract_segmentation", "bundle_segmentations"),
            ("All_endpoints", img_utils.save_multilabel_img_as_multiple_files_endings, "endings_segmentation",
             "endings_segmentations"),
            ("xtract", img_utils.save_multilabel_img_as_multiple_files, "tract_segmentation", "bundle_segmentations")):
        bundles = dataset_specific_utils.get_bundle_names(classes)[1:]
        outdir = tmp_path / classes
        saver(classes, np.zeros((2, 2, 2, len(bundles)), np.uint8), LAS_AFFINE, str(outdir), name=folder)
        written = sorted(outdir.rglob("*.nii.gz"))
        for probabilities in (False, True):
            ours = output_paths(output_type, bundles, False, probabilities, outdir)
            assert ours == [outdir / folder / f"{bundle}.nii.gz" for bundle in bundles]
            assert sorted(ours) == written


def test_single_file_names_and_options() -> None:
    out = Path("/o")
    assert output_paths("tract_segmentation", ["AF_left"], True, False, out) == [out / "bundle_segmentations.nii.gz"]
    assert output_paths("endings_segmentation", ["AF_left_b"], True, True, out) == [out / "bundle_endings.nii.gz"]
    assert output_paths("tract_segmentation", ["CA"], False, False, out, tract_segmentation_dir="segs") == \
        [out / "segs" / "CA.nii.gz"]
    assert default_output_dir("/data/subj/peaks.nii.gz") == Path("/data/subj/tractseg_output")
    assert output_paths("TOM", ["CA"], False, False, out) == [out / "TOM" / "CA.nii.gz"]  # bin/TractSeg's names
    assert output_paths("dm_regression", ["CA"], True, False, out) == [out / "bundle_density_maps.nii.gz"]
    assert output_paths("dm_regression", ["CA"], False, False, out) == [out / "dm_regression" / "CA.nii.gz"]
    with pytest.raises(ValueError):
        output_paths("peak_regression", ["CA"], False, False, out)


def test_output_dtypes() -> None:
    assert output_dtype("tract_segmentation", False) == np.int32
    assert output_dtype("tract_segmentation", False, all_masks_empty=True) == np.uint8
    assert output_dtype("tract_segmentation", False, postprocess=False) == np.uint8
    assert output_dtype("endings_segmentation", False) == np.int16
    assert output_dtype("tract_segmentation", True) == np.float32
    assert output_dtype("endings_segmentation", True) == np.float32


@pytest.mark.parametrize("ours_dtype, upstream_dtype", [
    (np.uint8, np.int32), (np.uint8, np.uint8), (np.int16, np.int16), (np.float32, np.float32)])
def test_write_matches_upstream_bytes(tmp_path: Path, ours_dtype: type, upstream_dtype: type) -> None:
    _, img_utils, _ = upstream_modules()
    rng = np.random.default_rng(2)
    if upstream_dtype == np.float32:
        volume = rng.random((6, 5, 4, 1)).astype(np.float32)
    else:
        volume = (rng.random((6, 5, 4, 1)) > 0.5).astype(upstream_dtype)
    img_utils.save_multilabel_img_as_multiple_files("test_single", volume, LAS_AFFINE, str(tmp_path / "up"))
    upstream_file = next((tmp_path / "up" / "bundle_segmentations").glob("*.nii.gz"))
    ours_file = write_nifti_atomic(volume[..., 0].astype(ours_dtype), LAS_AFFINE,
                                   tmp_path / "ours" / "bundle_segmentations" / upstream_file.name, upstream_dtype)
    assert ours_file.read_bytes() == upstream_file.read_bytes()
    ours = nib.load(ours_file)
    assert ours.get_data_dtype() == upstream_dtype
    assert ours.header["sform_code"] == 2 and ours.header["qform_code"] == 0


def test_single_4d_file_written_from_uint8_is_upstream_int32(tmp_path: Path) -> None:
    masks = (np.random.default_rng(3).random((5, 4, 3, 7)) > 0.5).astype(np.uint8)
    nib.save(nib.Nifti1Image(masks.astype(np.int32), LAS_AFFINE), tmp_path / "upstream.nii.gz")
    path = write_nifti_atomic(masks, LAS_AFFINE, tmp_path / "bundle_segmentations.nii.gz", np.int32)
    assert path.read_bytes() == (tmp_path / "upstream.nii.gz").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle_segmentations.nii.gz", "upstream.nii.gz"]


@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()])
def test_failed_write_leaves_no_temp_and_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        failure: BaseException) -> None:
    target = tmp_path / "bundle_segmentations" / "CA.nii.gz"
    write_nifti_atomic(np.ones((3, 3, 3), np.uint8), LAS_AFFINE, target, np.int32)
    before = target.read_bytes()

    def partial_save(image: nib.Nifti1Image, filename: Path) -> None:
        Path(filename).write_bytes(b"\x1f\x8b partial")
        raise failure

    monkeypatch.setattr(nifti_io.nib, "save", partial_save)
    with pytest.raises(type(failure)):
        write_nifti_atomic(np.zeros((3, 3, 3), np.uint8), LAS_AFFINE, target, np.int32)
    with pytest.raises(type(failure)):
        write_nifti_atomic(np.zeros((3, 3, 3), np.uint8), LAS_AFFINE, tmp_path / "new.nii.gz", np.int32)
    assert target.read_bytes() == before
    assert [p.name for p in target.parent.iterdir()] == ["CA.nii.gz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle_segmentations"]


def test_example_peaks_load(example_peaks_path: Path) -> None:
    data, affine = load_peaks(example_peaks_path)
    expected, expected_affine = upstream_read(example_peaks_path)
    np.testing.assert_array_equal(data, expected)
    np.testing.assert_array_equal(affine, expected_affine)
