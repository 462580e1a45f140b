"""python -m runtime.run end to end on small real bundles (S=16, random demo weights) and real NIfTI files.

What is checked here, fast: the fusion against upstream's own slicing and mean code, the post-processing chain
against upstream's functions, file layout / names / dtypes / headers as upstream writes them, orientation
handling (a flipped copy of the input gives the flipped output), the single-file writer, report, progress,
--quiet, overwrite policy and artifact resolution. Parity with the upstream CLI on identical weights is at full
size in test_run_parity.py.
"""
from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from runtime.network.backends import open_backend
from runtime.models.bundles import ENDINGS_BUNDLES, TRACTQUERIER_BUNDLES, XTRACT_BUNDLES
from runtime.io.checksum import sha256_of
from runtime.io.geometry import crop_to_nonzero, pad_and_zoom_to_cube
from runtime.models.manifest import load_manifest
from runtime.io.nifti_stream import write_nifti_volumes
from runtime.outputs.writers import OutputSpec, write_outputs
from runtime.outputs.postprocess import BUNDLE_SPECIFIC_RULES
from runtime.network.predict import fused_probabilities
from runtime.run import main
from tests.run_support import (LAS, SMALL_SIZE, files_under, flipped_input, read, save_peaks, small_bundle,
                               synthetic_peaks)
from tests.upstream import upstream_modules


@pytest.fixture()
def peaks(tmp_path):
    return save_peaks(tmp_path / "subject" / "peaks.nii.gz", synthetic_peaks())


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def stack(folder, names) -> np.ndarray:
    return np.stack([read(folder / f"{n}.nii.gz")[0] for n in names], axis=-1)


# ---------------------------------------------------------------- fusion


def test_numpy_mean_over_three_is_sequential_float32_sum():
    """Upstream's img.mean(axis=4) over (x, y, z, C, 3) float32 is ((x + y) + z) / 3 in float32, bit for bit."""
    rng = np.random.default_rng(0)
    probs = rng.random((24, 24, 24, 72, 3), dtype=np.float32)
    acc = probs[..., 0].copy()
    acc += probs[..., 1]
    acc += probs[..., 2]
    acc /= np.float32(3)
    assert np.array_equal(acc, probs.mean(axis=4))
    other_order = (probs[..., 0] + (probs[..., 1] + probs[..., 2])) / np.float32(3)
    assert not np.array_equal(other_order, probs.mean(axis=4))  # the order matters, and we use upstream's


def test_fused_probabilities_equal_upstream_slicing_and_mean(tract_small):
    """Every slice through the real backend, sliced, transposed and fused by upstream's code, equals
    fused_probabilities (which runs batches, skips all-zero slices and accumulates in place)."""
    data_utils, _, _ = upstream_modules()
    from tractseg.libs import direction_merger

    manifest = load_manifest(tract_small)
    backend = open_backend("onnxruntime", "cpu", manifest)
    size, batch = manifest.slice_size, manifest.batch_size
    cube, _ = pad_and_zoom_to_cube(crop_to_nonzero(synthetic_peaks((30, 21, 17)))[0], size)
    ours, stats = fused_probabilities(cube, backend, batch, manifest.n_classes)
    assert stats.skipped > 0 and stats.run + stats.skipped == 3 * size

    seg = np.zeros((size, size, size, 1), dtype=np.uint8)
    per_direction = []
    for direction in range(3):
        out = np.empty((size, size, size, manifest.n_classes), dtype=np.float32)
        for i in range(size):
            x, _ = data_utils.sample_slices(cube, seg, [i], slice_direction=direction)  # (1, 9, a, b)
            padded = np.zeros((batch, 9, size, size), dtype=np.float32)
            padded[0] = x[0]
            probs = backend(padded)[:1].transpose(0, 2, 3, 1)  # upstream's model.predict layout
            index = [slice(None)] * 3
            index[direction] = i
            out[tuple(index)] = probs[0]
        per_direction.append(out[..., None])
    reference = direction_merger.mean_fusion(0.5, np.concatenate(per_direction, axis=4), probs=True)
    assert reference.std() > 0.05  # not vacuous
    np.testing.assert_array_equal(np.moveaxis(ours, 0, -1), reference)


# ---------------------------------------------------------------- post-processing vs upstream functions


def test_postprocessing_chain_equals_upstream_functions(tmp_path):
    """Threshold + CA/FX rule + closing, zoom back, un-pad, un-crop, blob removal (25) and flip back, as
    run_tractseg + bin/TractSeg do them, on fused probabilities with blobs of every size."""
    data_utils, img_utils, _ = upstream_modules()
    size = 32
    data, affine = synthetic_peaks((26, 20, 23)), LAS.copy()
    affine[0, 0] = 2.5  # RAS: upstream flips x before and after
    flipped = np.flip(data, axis=0)
    cropped, bbox = crop_to_nonzero(flipped)
    _, transform = pad_and_zoom_to_cube(cropped, size)
    rng = np.random.default_rng(1)
    fused = ndimage.gaussian_filter(rng.random((72, size, size, size)), sigma=(0, 1.5, 1.5, 1.5))
    fused = ((fused - fused.mean()) * 12 + 0.45).clip(0, 1).astype(np.float32)
    ca = TRACTQUERIER_BUNDLES.index("CA")
    fused[ca] = 0.2
    fused[ca, 4:14, 4:14, 4:14] = 0.7
    fused[ca, 4:14, 4:14, 18:26] = 0.7
    fused[ca, 7:11, 7:11, 14:18] = 0.45  # bridge: > 0.3 only, restored by the CA rule
    bundles = TRACTQUERIER_BUNDLES
    paths = tuple(tmp_path / "out" / f"{b}.nii.gz" for b in bundles)
    spec = OutputSpec("tract_segmentation", bundles, paths, False, False, True, affine, (0,), transform, bbox,
                      data.shape[:3])
    write_outputs(fused, spec)

    seg = img_utils.bundle_specific_postprocessing(np.moveaxis(fused, 0, -1), list(bundles))
    seg = data_utils.cut_and_scale_img_back_to_original_img(seg, transform.as_upstream_dict(), nr_cpus=1)
    seg = data_utils.add_original_zero_padding_again(seg, bbox, data.shape, 72)
    seg = img_utils.postprocess_segmentations(seg, list(bundles), blob_thr=25, hole_closing=None)
    seg = img_utils.flip_axis(seg, "x")
    ours = stack(tmp_path / "out", bundles)
    assert read(paths[0])[1].get_data_dtype() == seg.dtype == np.int32
    assert ours.any() and (ours != seg.max()).any()
    np.testing.assert_array_equal(ours, seg)


def test_all_masks_empty_keeps_uint8_as_upstream(tmp_path):
    _, img_utils, _ = upstream_modules()
    data = synthetic_peaks((20, 20, 20))
    cropped, bbox = crop_to_nonzero(data)
    _, transform = pad_and_zoom_to_cube(cropped, 32)
    fused = np.zeros((72, 32, 32, 32), dtype=np.float32)
    upstream = img_utils.postprocess_segmentations(np.zeros((*data.shape[:3], 72), np.uint8),
                                                   list(TRACTQUERIER_BUNDLES), blob_thr=25)
    for single in (False, True):
        paths = ((tmp_path / f"s{single}.nii.gz",) if single else
                 tuple(tmp_path / f"{b}.nii.gz" for b in TRACTQUERIER_BUNDLES))
        spec = OutputSpec("tract_segmentation", TRACTQUERIER_BUNDLES, paths, single, False, True, LAS, (), transform,
                          bbox, data.shape[:3])
        write_outputs(fused, spec)
        assert {nib.load(p).get_data_dtype() for p in paths} == {upstream.dtype} == {np.dtype(np.uint8)}


@pytest.mark.parametrize("dtype,on_disk", [(np.uint8, np.int32), (np.float32, np.float32), (np.int16, np.int16)])
def test_streamed_4d_file_is_byte_identical_to_nibabel(tmp_path, dtype, on_disk):
    rng = np.random.default_rng(0)
    data = (rng.random((7, 9, 8, 5)) * (1 if dtype == np.float32 else 2)).astype(dtype)
    reference = nib.Nifti1Image(data, LAS)
    reference.set_data_dtype(on_disk)
    nib.save(reference, tmp_path / "ref.nii.gz")
    write_nifti_volumes((data[..., i] for i in range(5)), data.shape, np.dtype(on_disk), LAS, tmp_path / "s.nii.gz")
    assert gzip.open(tmp_path / "s.nii.gz").read() == gzip.open(tmp_path / "ref.nii.gz").read()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


# ---------------------------------------------------------------- the CLI


def test_tract_segmentation_files_as_upstream_writes_them(tract_small, peaks, tmp_path, capsys):
    _, _, dataset_specific_utils = upstream_modules()
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, peaks, "-o", out, "--artifacts", tract_small, "--report", tmp_path / "r.json")
    assert code == 0, err
    assert "demo weights, not anatomical" in err
    names = dataset_specific_utils.get_bundle_names("All")[1:]
    assert [p.relative_to(out).as_posix() for p in files_under(out)] == sorted(
        f"bundle_segmentations/{n}.nii.gz" for n in names)
    masks = stack(out / "bundle_segmentations", names)
    _, image = read(out / "bundle_segmentations" / "CST_left.nii.gz")
    source = nib.load(peaks)
    assert masks.shape == source.shape[:3] + (72,)
    assert image.get_data_dtype() == np.int32
    np.testing.assert_array_equal(image.affine, source.affine)
    assert (int(image.header["sform_code"]), int(image.header["qform_code"])) == (2, 0)
    assert set(np.unique(masks)) == {0, 1}
    assert 0.01 < masks.mean() < 0.99 and masks.any(axis=(0, 1, 2)).sum() > 10
    _, bbox = crop_to_nonzero(np.asarray(source.dataobj))
    outside = np.ones(masks.shape[:3], bool)
    outside[tuple(slice(a, b) for a, b in bbox)] = False
    assert not masks[outside].any()  # nothing outside the input's nonzero box, as upstream

    report = json.loads((tmp_path / "r.json").read_text())
    manifest = load_manifest(tract_small)
    assert report["backend"]["name"] in ("openvino", "onnxruntime") and report["backend"]["device"] == "cpu"
    assert report["artifact"]["bundle_id"] == manifest.bundle_id
    for rel, digest in report["artifact"]["files"].items():
        assert digest == manifest.files[rel].sha256 == sha256_of(manifest.root / rel)
    assert {"load", "open_backend", "preprocess", "network", "postprocess_write", "total"} <= set(
        report["timings_s"])
    assert report["slices"]["run"] + report["slices"]["skipped"] == 3 * SMALL_SIZE
    assert report["outputs"] == [str(p) for p in sorted(out.rglob("*.nii.gz"), key=lambda p: names.index(
        p.name[:-7]))]
    assert report["versions"]["numpy"] == np.__version__ and report["peak_rss_mb"] > 0


def test_default_output_dir_is_next_to_the_input(tract_small, peaks, capsys):
    code, _, err = cli(capsys, peaks, "--artifacts", tract_small, "--single_output_file", "--quiet")
    assert code == 0, err
    assert (peaks.parent / "tractseg_output" / "bundle_segmentations.nii.gz").is_file()


def test_single_file_probabilities_and_no_postprocess_agree(tract_small, peaks, tmp_path, capsys):
    runs = {"masks": [], "single": ["--single_output_file"], "probs": ["--get_probabilities"],
            "raw": ["--no_postprocess"]}
    for name, extra in runs.items():
        code, _, err = cli(capsys, peaks, "-o", tmp_path / name, "--artifacts", tract_small, "--quiet", *extra)
        assert code == 0, err
    masks = stack(tmp_path / "masks" / "bundle_segmentations", TRACTQUERIER_BUNDLES)
    single, image = read(tmp_path / "single" / "bundle_segmentations.nii.gz")
    assert image.get_data_dtype() == np.int32 and single.shape == masks.shape
    np.testing.assert_array_equal(single, masks)
    probs = stack(tmp_path / "probs" / "bundle_segmentations", TRACTQUERIER_BUNDLES)
    raw = stack(tmp_path / "raw" / "bundle_segmentations", TRACTQUERIER_BUNDLES)
    assert probs.dtype == np.float32 and raw.dtype == np.uint8 and 0 <= probs.min() and probs.max() <= 1
    plain = [i for i, b in enumerate(TRACTQUERIER_BUNDLES) if b not in BUNDLE_SPECIFIC_RULES]
    np.testing.assert_array_equal(raw[..., plain], (probs[..., plain] > 0.5).astype(np.uint8))
    assert np.all(masks <= raw) and (masks < raw).any()  # blob removal only removes


def test_endings_segmentation_files(endings_small, peaks, tmp_path, capsys):
    code, _, err = cli(capsys, peaks, "-o", tmp_path / "a", "--artifacts", endings_small, "--quiet",
                       "--output_type", "endings_segmentation")
    assert code == 0, err
    files = files_under(tmp_path / "a")
    assert [p.relative_to(tmp_path / "a").as_posix() for p in files] == sorted(
        f"endings_segmentations/{b}.nii.gz" for b in ENDINGS_BUNDLES)
    masks = stack(tmp_path / "a" / "endings_segmentations", ENDINGS_BUNDLES)
    assert nib.load(files[0]).get_data_dtype() == np.int16 and set(np.unique(masks)) == {0, 1}
    code, _, err = cli(capsys, peaks, "-o", tmp_path / "b", "--artifacts", endings_small, "--quiet",
                       "--output_type", "endings_segmentation", "--single_output_file")
    assert code == 0, err
    single, image = read(tmp_path / "b" / "bundle_endings.nii.gz")
    assert image.get_data_dtype() == np.int16
    np.testing.assert_array_equal(single, masks)


def test_xtract_files(request, peaks, tmp_path, capsys):
    _, _, dataset_specific_utils = upstream_modules()
    bundle = small_bundle(request.config, tract_definition="xtract")
    code, _, err = cli(capsys, peaks, "-o", tmp_path, "--artifacts", bundle, "--quiet",
                       "--tract_definition", "xtract", "--report", tmp_path / "r.json")
    assert code == 0, err
    names = dataset_specific_utils.get_bundle_names("xtract")[1:]
    assert tuple(names) == XTRACT_BUNDLES
    assert [p.relative_to(tmp_path).as_posix() for p in files_under(tmp_path / "bundle_segmentations")] == sorted(
        f"bundle_segmentations/{n}.nii.gz" for n in names)
    assert json.loads((tmp_path / "r.json").read_text())["output_dtype"] == "int32"
    code, _, err = cli(capsys, peaks, "-o", tmp_path / "x", "--artifacts", bundle, "--quiet")
    assert code == 1 and "tract_segmentation/xtract with 42 classes" in err  # a TractQuerier+ request


@pytest.mark.parametrize("axes", [(0,), (1, 2), (0, 1, 2)], ids=["RAS", "LPI", "RPI"])
def test_flipped_storage_gives_the_flipped_result(tract_small, tmp_path, capsys, axes):
    """Stored with other axis signs, the same image gives the same segmentation, stored the same way."""
    data = synthetic_peaks()
    base = save_peaks(tmp_path / "las.nii.gz", data)
    other_data, other_affine = flipped_input(data, LAS, axes)
    other = save_peaks(tmp_path / "other.nii.gz", other_data, other_affine)
    for name, path in (("las", base), ("other", other)):
        code, _, err = cli(capsys, path, "-o", tmp_path / name, "--artifacts", tract_small, "--quiet",
                           "--single_output_file")
        assert code == 0, err
    las, _ = read(tmp_path / "las" / "bundle_segmentations.nii.gz")
    flipped, image = read(tmp_path / "other" / "bundle_segmentations.nii.gz")
    np.testing.assert_array_equal(image.affine, other_affine)
    assert las.any()
    np.testing.assert_array_equal(flipped, np.flip(las, axis=axes))


def test_quiet_prints_nothing_but_the_demo_warning(tract_small, peaks, tmp_path, capsys):
    code, out, err = cli(capsys, peaks, "-o", tmp_path / "q", "--artifacts", tract_small, "--quiet",
                         "--single_output_file")
    assert code == 0 and out == ""
    assert err.strip().splitlines() == [line for line in err.strip().splitlines() if "demo weights" in line]
    code, out, err = cli(capsys, peaks, "-o", tmp_path / "v", "--artifacts", tract_small, "--single_output_file",
                         "--backend", "onnxruntime", "--nr_cpus", "1")
    assert code == 0 and "onnxruntime" in out and "slice" in err and f"{3 * SMALL_SIZE}/{3 * SMALL_SIZE}" in err


def test_existing_outputs_are_refused_unless_force(tract_small, peaks, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(capsys, peaks, "-o", out, "--artifacts", tract_small, "--quiet", "--single_output_file")[0] == 0
    target = out / "bundle_segmentations.nii.gz"
    target.write_bytes(b"keep me")
    code, _, err = cli(capsys, peaks, "-o", out, "--artifacts", tract_small, "--quiet", "--single_output_file")
    assert code == 1 and "already exist" in err and "--force" in err and target.read_bytes() == b"keep me"
    code, _, err = cli(capsys, peaks, "-o", out, "--artifacts", tract_small, "--quiet", "--single_output_file",
                       "--force")
    assert code == 0, err
    assert nib.load(target).shape[3] == 72
    assert [p.name for p in out.iterdir()] == ["bundle_segmentations.nii.gz"]  # no temporary files left


def test_force_replaces_the_folder_but_never_a_users_own_file(tract_small, peaks, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(capsys, peaks, "-o", out, "--artifacts", tract_small, "--quiet")[0] == 0
    folder = out / "bundle_segmentations"
    assert cli(capsys, peaks, "-o", out, "--artifacts", tract_small, "--quiet", "--force")[0] == 0
    assert len(list(folder.iterdir())) == 72
    (folder / "notes.txt").write_text("mine")
    code, _, err = cli(capsys, peaks, "-o", out, "--artifacts", tract_small, "--quiet", "--force")
    assert code == 1 and "holds notes.txt, which this run does not write" in err
    assert (folder / "notes.txt").read_text() == "mine" and len(list(folder.iterdir())) == 73


def test_artifacts_from_environment(tract_small, peaks, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TRACTSEG_AOT_ARTIFACTS", tract_small)  # a bundle dir
    assert cli(capsys, peaks, "-o", tmp_path / "a", "--quiet", "--single_output_file")[0] == 0
    root = tmp_path / "artifacts"
    root.mkdir()
    (root / "tract_segmentation").symlink_to(tract_small)  # a folder of <model name>/ bundles
    monkeypatch.setenv("TRACTSEG_AOT_ARTIFACTS", str(root))
    assert cli(capsys, peaks, "-o", tmp_path / "b", "--quiet", "--single_output_file")[0] == 0
    code, _, err = cli(capsys, peaks, "-o", tmp_path / "c", "--quiet", "--output_type", "endings_segmentation")
    assert code == 1 and "python -m export --task endings_segmentation" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_backends_agree(tract_small, peaks, tmp_path, capsys):
    for backend in ("onnxruntime", "openvino"):
        code, _, err = cli(capsys, peaks, "-o", tmp_path / backend, "--artifacts", tract_small, "--quiet",
                           "--single_output_file", "--get_probabilities", "--backend", backend)
        assert code == 0, err
    a, _ = read(tmp_path / "onnxruntime" / "bundle_segmentations.nii.gz")
    b, _ = read(tmp_path / "openvino" / "bundle_segmentations.nii.gz")
    assert np.abs(a - b).max() < 2e-5
