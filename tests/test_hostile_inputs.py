"""Hostile input: singular affines, headers claiming more than there is, artifacts the backend cannot load,
invalid manifests, data types that are not real numbers, values float32 cannot normalise, symbolic link loops,
permuted and oblique axes. No traceback, no partial output set, ever.

Every refusal here is the CLI's contract (tests.run_support.refused / check_one_error): exit status 1, exactly one
stderr line "tractseg-aot: error: <file>: <what>", and no file written. ``ulimit -v`` runs start
``python -m runtime.run`` in a subprocess; the rest call ``runtime.run.main`` in this process. Input checks are
proved to come before the network by making the backend's opening fail the test (fixture ``no_network``, in
conftest.py).
"""
from __future__ import annotations

import time

import nibabel as nib
import numpy as np
import pytest

from runtime.run import main
from tests.run_support import (LAS, N_BUNDLES, check_one_error, copy_bundle, edit_manifest, final_files, raw_nifti,
                               refused, replace_artifact, run_args, save_peaks, staging_folders, start_cli,
                               synthetic_peaks, wait)


def header_for(shape, dtype=np.float32, affine=LAS, klass=nib.Nifti1Header) -> nib.Nifti1Header:
    """A header with ``affine`` as the sform (code 2, what nibabel reports) and no qform."""
    header = klass()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_sform(affine, code=2)
    return header


def f_order(data: np.ndarray) -> bytes:
    return data.tobytes(order="F")


# ---------------------------------------------------------------- 1. singular affines


def test_zero_sform_is_refused_as_singular(capsys, tmp_path, tract_small, no_network):
    data = synthetic_peaks((12, 14, 11))
    header = header_for(data.shape, affine=np.zeros((4, 4)))
    path = raw_nifti(tmp_path / "zero-sform.nii.gz", header, f_order(data))
    assert not np.any(nib.load(path).affine[:3, :3])
    line = refused(capsys, tmp_path, *run_args(path, tract_small, tmp_path), expect="singular")
    assert str(path) in line


@pytest.mark.parametrize("qform_code", [1, 0], ids=["qform", "no-codes"])
def test_zero_voxel_size_qform_is_refused_as_singular(capsys, tmp_path, tract_small, no_network, qform_code):
    """No sform, and the qform (or nibabel's fall-back affine) has voxel size 0: nibabel reads it as 1 mm, and
    so would upstream; the raw header says the geometry is singular."""
    data = synthetic_peaks((12, 14, 11))
    header = header_for(data.shape)
    header.set_sform(None, code=0)
    header.set_qform(np.diag([2.0, 2.0, 2.0, 1.0]), code=qform_code)
    header["pixdim"][1:4] = 0
    path = raw_nifti(tmp_path / "zero-qform.nii.gz", header, f_order(data))
    line = refused(capsys, tmp_path, *run_args(path, tract_small, tmp_path), expect="singular")
    assert str(path) in line and "pixdim" in line


# ---------------------------------------------------------------- 2. headers claiming more than there is


@pytest.mark.parametrize("name,shape,klass", [
    ("huge.nii", (32767, 32767, 32767, 9), nib.Nifti1Header),
    ("huge.nii.gz", (32767, 32767, 32767, 9), nib.Nifti1Header),
    ("huge2.nii", (100000, 100000, 100000, 9), nib.Nifti2Header),
], ids=["nifti1", "nifti1-gz", "nifti2"])
def test_header_claiming_huge_dims_is_refused(capsys, tmp_path, tract_small, no_network, name, shape, klass):
    path = raw_nifti(tmp_path / name, header_for(shape, klass=klass), b"\0" * 64)
    started = time.perf_counter()
    line = refused(capsys, tmp_path, *run_args(path, tract_small, tmp_path), expect="header claims")
    assert str(path) in line and "corrupt header or truncated file" in line
    assert time.perf_counter() - started < 5


def test_long_thin_volume_is_refused(capsys, tmp_path, tract_small, no_network):
    data = np.random.default_rng(0).normal(size=(32000, 1, 1, 9)).astype(np.float32)
    path = save_peaks(tmp_path / "long.nii.gz", data)
    line = refused(capsys, tmp_path, *run_args(path, tract_small, tmp_path), expect=("memory", "nonzero region"))
    assert str(path) in line


def test_slab_is_refused_quickly_by_cube_aspect(capsys, tmp_path, tract_small, no_network):
    data = np.random.default_rng(0).normal(size=(400, 2, 2, 9)).astype(np.float32)
    path = save_peaks(tmp_path / "slab.nii.gz", data)
    started = time.perf_counter()
    line = refused(capsys, tmp_path, *run_args(path, tract_small, tmp_path), expect="200:1")
    assert time.perf_counter() - started < 5
    assert str(path) in line and "whole-brain" in line


# ---------------------------------------------------------------- 3. artifacts the backend cannot load


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_garbage_model_with_matching_checksum(capsys, tmp_path, tract_small, good, backend):
    pytest.importorskip(backend)
    bundle = copy_bundle(tract_small, tmp_path / "bundle", with_artifact=False)
    model = replace_artifact(bundle, b"this is not an ONNX model\x00\xff" * 400)
    line = refused(capsys, tmp_path, *run_args(good, bundle, tmp_path, "--backend", backend),
                   expect=f"{backend} cannot load it")
    assert str(model) in line


def test_out_of_memory_while_loading_the_backend(tmp_path, tract_small, good):
    """Under ``ulimit -v`` Python starts but ONNX Runtime cannot load the 148 MB model: one line, exit 1. The
    limit that does this depends on the machine, so a few are tried (too low: Python itself cannot start)."""
    pytest.importorskip("onnxruntime")
    seen = []
    for limit_kb in (450_000, 650_000, 900_000, 1_200_000):
        if sum("out of memory" in str(what) for _, what in seen) == 2:
            break
        out = tmp_path / f"out-{limit_kb}"
        process = start_cli(good, "-o", out, "--artifacts", tract_small, "--quiet", "--backend", "onnxruntime",
                            shell_prefix=f"ulimit -v {limit_kb}",
                            env={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
        code, _, err = wait(process)
        if "tractseg-aot:" not in err:  # Python or numpy failed to start under this limit: not ours to judge
            seen.append((limit_kb, "did not start"))
            continue
        if code == 0:
            assert len(final_files(out)) == N_BUNDLES
            seen.append((limit_kb, "ran"))
            break
        assert code == 1, err
        line = check_one_error(err, "out of memory")
        assert final_files(out) == [] and staging_folders(out) == []
        seen.append((limit_kb, line))
    assert any("out of memory" in str(what) for _, what in seen), seen


# ---------------------------------------------------------------- 4. manifests: valid JSON, invalid manifest


def _set(path, value):
    def change(manifest):
        target = manifest
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return manifest
    return change


def _delete(path):
    def change(manifest):
        target = manifest
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
        return manifest
    return change


def _dotdot_file(manifest):
    manifest["files"]["../model.onnx"] = manifest["files"].pop("model.onnx")
    manifest["artifacts"][0]["files"] = ["../model.onnx"]
    return manifest


MANIFESTS = {
    "null": lambda m: None,
    "number": lambda m: 42,
    "list": lambda m: [],
    "model-a-string": _set(["model"], "tract_segmentation"),
    "no-artifacts": _delete(["artifacts"]),
    "artifacts-empty": _set(["artifacts"], []),
    "artifact-without-id": _delete(["artifacts", 0, "id"]),
    "artifact-without-files": _delete(["artifacts", 0, "files"]),
    "file-without-size": _delete(["files", "model.onnx", "size"]),
    "slice-size-0": _set(["function", "input", "shape"], [3, 9, 0, 0]),
    "n-classes-0": _set(["model", "n_classes"], 0),
    "file-path-dotdot": _dotdot_file,
    "artifact-path-dotdot": _set(["artifacts", 0, "path"], "../model.onnx"),
    "absolute-path": _set(["artifacts", 0, "path"], "/etc/passwd"),
    "sha256-not-hex": _set(["files", "model.onnx", "sha256"], "z" * 64),
    "cpu-flags-a-number": _set(["artifacts", 0, "details"], {"requires_cpu_flags": 5}),
}


@pytest.mark.parametrize("change", MANIFESTS.values(), ids=MANIFESTS.keys())
def test_invalid_manifest(capsys, tmp_path, tract_small, good, no_network, change):
    bundle = copy_bundle(tract_small, tmp_path / "bundle", link_artifact=True)
    manifest = edit_manifest(bundle, change)
    line = refused(capsys, tmp_path, *run_args(good, bundle, tmp_path), expect="invalid manifest")
    assert str(manifest) in line


# ---------------------------------------------------------------- 9. data types that are not real numbers


def test_complex_data_is_refused_by_name(capsys, tmp_path, tract_small, no_network):
    path = save_peaks(tmp_path / "complex.nii.gz", synthetic_peaks((12, 14, 11)).astype(np.complex64))
    line = refused(capsys, tmp_path, *run_args(path, tract_small, tmp_path), expect="complex data (complex64)")
    assert str(path) in line


@pytest.mark.parametrize("shape", [(12, 14, 11), (12, 14, 11, 9)], ids=["colour-map", "4d"])
def test_rgb24_is_refused_by_name(capsys, tmp_path, tract_small, no_network, shape):
    rgb = np.zeros(shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    path = tmp_path / "rgb.nii.gz"
    nib.save(nib.Nifti1Image(rgb, LAS), path)
    line = refused(capsys, tmp_path, *run_args(path, tract_small, tmp_path), expect="RGB24")
    assert str(path) in line


# ---------------------------------------------------------------- 10. values float32 cannot normalise


def test_values_near_float32_max_are_refused(capsys, tmp_path, tract_small, no_network):
    data = synthetic_peaks((12, 14, 11))
    data *= np.float32(3e38) / np.abs(data).max()
    assert np.isfinite(data).all()
    path = save_peaks(tmp_path / "huge-values.nii.gz", data)
    line = refused(capsys, tmp_path, *run_args(path, tract_small, tmp_path), expect="cannot be normalised")
    assert str(path) in line


def test_nan_only_is_refused_as_all_zero(capsys, tmp_path, tract_small, no_network):
    path = save_peaks(tmp_path / "nan.nii.gz", np.full((10, 11, 12, 9), np.nan, np.float32))
    refused(capsys, tmp_path, *run_args(path, tract_small, tmp_path), expect="all voxels are zero")


# ---------------------------------------------------------------- also


def test_symbolic_link_loop(capsys, tmp_path, tract_small, no_network):
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    a.symlink_to(b)
    b.symlink_to(a)
    line = refused(capsys, tmp_path, *run_args(a, tract_small, tmp_path), expect="symbolic link loop")
    assert str(a) in line


@pytest.mark.parametrize("option", ["-o", "--artifacts"])
def test_empty_path_is_a_command_line_error(capsys, tmp_path, good, option):
    args = [good, "--quiet", option, ""]
    refused(capsys, tmp_path, *args, expect="empty path", code=2)


def test_permuted_axes_are_refused(capsys, tmp_path, tract_small, no_network):
    path = save_peaks(tmp_path / "permuted.nii.gz", synthetic_peaks((12, 14, 11)), LAS[:, [1, 0, 2, 3]])
    line = refused(capsys, tmp_path, *run_args(path, tract_small, tmp_path), expect="fslreorient2std")
    assert str(path) in line and "permuted" in line


def test_oblique_affine_is_accepted_with_one_warning(capsys, tmp_path, tract_small):
    angle = np.radians(10)
    rotation = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    affine = LAS.copy()
    affine[:3, :3] = rotation @ LAS[:3, :3]
    path = save_peaks(tmp_path / "oblique.nii.gz", synthetic_peaks((12, 14, 11)), affine)
    assert main([str(a) for a in run_args(path, tract_small, tmp_path)]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "demo weights" not in line]
    assert len(lines) == 1 and lines[0].startswith("tractseg-aot: warning: ") and "10.0 degrees" in lines[0], err
    assert str(path) in lines[0]
    assert len(final_files(tmp_path / "out")) == N_BUNDLES
