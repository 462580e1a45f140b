"""The orientation check (runtime.orientation): flipped peak or b-vector axes are named, correct inputs stored any way
give no false alarm, and bad inputs get one line and exit 1. Real NIfTI files in tmp_path; the rows that need the
shared example peaks skip without them (fixture ``example_peaks_path``)."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from benchmarks.orientation import arc_tract_peaks, network_view, reoriented
from runtime.orientation import OrientationResult, apply_flip, check_peaks, flip_bvecs
from runtime.orientation.__main__ import main
from runtime.orientation.flips import bvec_row_flips, flip_matrix
from tests.no_jax import run_module

AXES = ("x", "y", "z")
PROG = "tractseg-aot-orientation"


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine).to_filename(path)
    return path


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _verdict(capsys, *args: str) -> dict:
    code, out, err = _cli(capsys, *args, "--json")
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1
    return json.loads(out)


@pytest.fixture(scope="module")
def real(example_peaks_path) -> tuple[np.ndarray, np.ndarray]:
    from runtime.io.nifti_io import load_peaks

    return load_peaks(example_peaks_path)


@pytest.fixture(scope="module")
def arcs() -> tuple[np.ndarray, np.ndarray]:
    return arc_tract_peaks()


# --- real peaks -------------------------------------------------------------------------------------------------

def test_real_peaks_as_given_are_right_with_confidence(capsys, example_peaks_path):
    result = _verdict(capsys, example_peaks_path)
    assert result["flip"] == "none" and result["confident"] is True
    assert set(result["scores"]) == {"none", "x", "y", "z"}
    runner_up = max(result["scores"][a] for a in AXES)
    assert result["margin"] == pytest.approx(result["scores"]["none"] - runner_up, abs=1e-4)
    assert result["margin"] > 0.04 and result["z"] > 10
    code, out, _ = _cli(capsys, example_peaks_path)
    assert code == 0 and "orientation looks right" in out and len(out.splitlines()) == 1


@pytest.mark.parametrize("axis", AXES)
def test_each_flip_of_the_real_peaks_is_named(capsys, tmp_path, real, axis):
    data, affine = real
    result = _verdict(capsys, _save(tmp_path / f"flip_{axis}.nii.gz", apply_flip(data, affine, axis), affine))
    assert result["flip"] == axis and result["confident"] is True
    code, out, _ = _cli(capsys, tmp_path / f"flip_{axis}.nii.gz")
    assert code == 0 and f"peak axis {axis} looks flipped" in out


@pytest.mark.parametrize("code", ["RAS", "LPI"])
def test_storage_order_gives_no_false_alarm(capsys, tmp_path, real, code):
    """The same brain stored RAS (or LPI): grid reordered with nibabel, directions kept (they are world vectors)."""
    data, affine = real
    stored, stored_affine = reoriented(data, affine, code)
    assert nib.aff2axcodes(stored_affine) == tuple(code)
    result = _verdict(capsys, _save(tmp_path / f"{code}.nii.gz", stored, stored_affine))
    assert result["flip"] == "none" and result["confident"] is True
    assert result["scores"] == pytest.approx(check_peaks(data, affine).scores, abs=1e-5)
    flipped = check_peaks(apply_flip(stored, stored_affine, "x"), stored_affine)
    assert flipped.flip == "x" and flipped.confident


def test_pipeline_mni_flip_keeps_ras_peaks_right(real):
    """What the network sees from a RAS-stored file (the pipeline flips the grid, not the vectors) equals the
    LAS-stored input and is coherent; negating x as well (upstream's optional flip_peaks) would make an x flip."""
    data, affine = real
    ras, ras_affine = reoriented(data, affine, "RAS")
    las_view, las_affine = network_view(data, affine)
    ras_view, ras_view_affine = network_view(ras, ras_affine)
    assert np.array_equal(las_view, ras_view) and np.allclose(las_affine, ras_view_affine)
    assert check_peaks(ras_view, ras_view_affine).flip == "none"
    negated = check_peaks(*network_view(ras, ras_affine, negate_x=True))
    assert negated.flip == "x" and negated.confident


def test_real_check_is_fast(real):
    data, affine = real
    assert min(check_peaks(data, affine).seconds for _ in range(3)) < 1.0


# --- synthetic fields -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("axis", ("none", *AXES))
def test_curved_tracts_are_read_right(arcs, axis):
    peaks, affine = arcs
    result = check_peaks(apply_flip(peaks, affine, axis), affine)
    assert result.flip == axis and result.confident and result.margin > 0.05


def test_oblique_and_ras_grids_of_the_synthetic_field(arcs):
    peaks, affine = arcs
    ras = check_peaks(*reoriented(peaks, affine, "RAS"))
    assert ras.flip == "none" and ras.confident
    tilt = np.eye(4)
    c, s = np.cos(np.deg2rad(15)), np.sin(np.deg2rad(15))
    tilt[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    turned = (peaks.reshape(*peaks.shape[:3], 3, 3) @ tilt[:3, :3].T.astype(np.float32)).reshape(peaks.shape)
    oblique = check_peaks(turned, tilt @ affine)
    assert oblique.flip == "none" and oblique.confident


def test_noise_gives_no_verdict(arcs):
    peaks, affine = arcs
    rng = np.random.default_rng(3)
    noise = np.zeros_like(peaks)
    noise[..., :3] = rng.normal(size=(*peaks.shape[:3], 3))
    result = check_peaks(noise, affine)
    assert not result.confident and not result.flipped and abs(result.margin) < 0.01
    empty = check_peaks(np.zeros((8, 8, 8, 9), np.float32), np.eye(4))
    assert not empty.confident and empty.voxels == 0


def test_result_type():
    result = OrientationResult("x", {"none": 0.6, "x": 0.7, "y": 0.6, "z": 0.6}, 0.1, True)
    assert result.flipped and result.as_dict()["flip"] == "x" and result.as_dict()["confident"] is True
    with pytest.raises(AttributeError):
        result.flip = "none"  # type: ignore[misc]


# --- flips of peaks and bvecs -----------------------------------------------------------------------------------

AFFINES = {
    "LAS": np.diag([-2.0, 2.0, 2.0, 1.0]),
    "RAS": np.diag([2.0, 2.0, 2.0, 1.0]),
    "LPI": np.diag([-1.5, -1.5, -3.0, 1.0]),
    "permuted": np.array([[0, 0, 2.0, 0], [2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 0, 1]]),
}
_t = np.deg2rad(20)
AFFINES["oblique"] = np.array([[np.cos(_t), -np.sin(_t), 0, 0], [np.sin(_t), np.cos(_t), 0, 0], [0, 0, 1, 0],
                               [0, 0, 0, 1]]) @ AFFINES["RAS"]


def test_apply_flip_world_and_voxel_frames():
    rng = np.random.default_rng(0)
    peaks = rng.normal(size=(3, 4, 5, 9)).astype(np.float32)
    for axis in AXES:
        flipped = apply_flip(peaks, AFFINES["LAS"], axis)
        i = AXES.index(axis)
        assert np.array_equal(flipped[..., i::3], -peaks[..., i::3])
        assert np.array_equal(np.delete(flipped, np.s_[i::3], axis=3), np.delete(peaks, np.s_[i::3], axis=3))
        for name, affine in AFFINES.items():  # vectors in voxel axes: the same world flip
            columns = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
            voxel = (peaks.reshape(-1, 3, 3) @ np.linalg.inv(columns).T).reshape(peaks.shape)
            expected = (flipped.reshape(-1, 3, 3) @ np.linalg.inv(columns).T).reshape(peaks.shape)
            assert np.allclose(apply_flip(voxel, affine, axis, frame="voxel"), expected, atol=1e-5), name
    assert np.array_equal(apply_flip(peaks, AFFINES["LAS"], "none"), peaks)


@pytest.mark.parametrize("name", list(AFFINES))
def test_flip_bvecs_matches_mrtrix_fslgrad(name):
    """Through MRtrix's -fslgrad reading (world_gradients): flip_bvecs with an affine negates that WORLD component;
    negating a row of the file is the reflection bvec_row_flips names; both agree for axis-aligned affines."""
    from runtime.diffusion.dipy_engine import world_gradients

    affine = AFFINES[name]
    rng = np.random.default_rng(1)
    table = rng.normal(size=(3, 12))
    table /= np.linalg.norm(table, axis=0)
    world = world_gradients(table.T, affine)
    rows = bvec_row_flips(affine)
    for axis in AXES:
        world_flip = flip_bvecs(table, axis, affine)
        assert world_flip.shape == table.shape
        assert np.allclose(world_gradients(world_flip.T, affine), world @ flip_matrix(axis), atol=1e-9)
        row_flip = flip_bvecs(table, axis)
        assert np.array_equal(row_flip[AXES.index(axis)], -table[AXES.index(axis)])
        assert np.allclose(world_gradients(row_flip.T, affine), world @ rows[axis].T, atol=1e-9)
        if name in ("LAS", "RAS", "LPI"):
            assert np.allclose(world_flip, row_flip)
        assert np.allclose(flip_bvecs(table.T, axis), row_flip.T)  # (N, 3) layout kept


# --- the b-vector check on simulated DWIs ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def arc_dwi(tmp_path_factory, arcs):
    pytest.importorskip("dipy")
    from benchmarks.diffusion_brain import simulate_from_peaks

    folder = tmp_path_factory.mktemp("arc_dwi")
    peaks, affine = arcs
    _save(folder / "peaks.nii.gz", peaks, affine)
    return simulate_from_peaks(folder / "peaks.nii.gz", folder / "dwi", n_dirs=24, n_b0=2, seed=2)


def _bvec_variants(phantom, folder: Path, axes=("none", *AXES)) -> dict[str, Path]:
    table = np.loadtxt(phantom.bvecs)
    files = {}
    for axis in axes:
        files[axis] = folder / f"{axis}.bvecs"
        np.savetxt(files[axis], flip_bvecs(table, axis), fmt="%.8f")
    return files


def test_bvecs_check_names_the_flipped_row_on_synthetic_tracts(capsys, tmp_path, arc_dwi):
    for axis, bvecs in _bvec_variants(arc_dwi, tmp_path).items():
        result = _verdict(capsys, arc_dwi.dwi, "--raw_diffusion_input", "--bvals", arc_dwi.bvals, "--bvecs", bvecs,
                          "--brain_mask", arc_dwi.mask)
        assert result["flip"] == axis and result["confident"] is True and result["frame"] == "bvecs", result
    code, out, _ = _cli(capsys, arc_dwi.dwi, "--raw_diffusion_input", "--bvecs", tmp_path / "y.bvecs")
    assert code == 0 and "negate row 2 of the bvecs file" in out  # default bvals, nodif_brain_mask beside the DWI


@pytest.mark.parametrize("code", ["LAS", "RAS"])
def test_bvecs_check_on_a_dwi_simulated_from_real_peaks(tmp_path, real, code):
    pytest.importorskip("dipy")
    from benchmarks.diffusion_brain import simulate_from_peaks
    from runtime.orientation import check_bvecs

    data, affine = real
    crop = tuple(slice(a, a + 28) for a in (22, 28, 24))
    cropped = data[crop]
    cropped_affine = affine.copy()
    cropped_affine[:3, 3] += affine[:3, :3] @ np.array([s.start for s in crop], dtype=float)
    stored = _save(tmp_path / "peaks.nii.gz", *reoriented(cropped, cropped_affine, code))
    phantom = simulate_from_peaks(stored, tmp_path / "dwi", n_dirs=24, n_b0=2, seed=0)
    axes = ("none", *AXES) if code == "LAS" else ("none", "x")
    for axis, bvecs in _bvec_variants(phantom, tmp_path, axes).items():
        result = check_bvecs(phantom.dwi, phantom.bvals, bvecs, phantom.mask)
        assert result.flip == axis and result.confident, (axis, result.summary())


def test_bvecs_check_makes_its_own_mask(tmp_path, arc_dwi):
    """No mask given and none beside the DWI: median_otsu on the b0s."""
    import shutil

    from runtime.orientation import check_bvecs

    for source in (arc_dwi.dwi, arc_dwi.bvals):
        shutil.copy(source, tmp_path / source.name)
    np.savetxt(tmp_path / "Diffusion.bvecs", flip_bvecs(np.loadtxt(arc_dwi.bvecs), "z"), fmt="%.8f")
    result = check_bvecs(tmp_path / "Diffusion.nii.gz")
    assert result.flip == "z" and result.confident, result.summary()

def test_bvecs_check_without_dipy_names_the_extra(capsys, monkeypatch, arc_dwi):
    import sys

    monkeypatch.setitem(sys.modules, "dipy", None)
    code, out, err = _cli(capsys, arc_dwi.dwi, "--raw_diffusion_input", "--brain_mask", arc_dwi.mask)
    assert code == 1 and out == "" and len(err.splitlines()) == 1
    assert err.startswith(f"{PROG}: error: ") and "'diffusion' extra" in err and "pip install" in err


# --- bad inputs ---------------------------------------------------------------------------------------------------

def _bad_inputs(root: Path) -> dict[str, tuple[Path, str]]:
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    garbage = root / "garbage.nii.gz"
    garbage.write_bytes(b"not a nifti file at all")
    return {
        "missing": (root / "absent.nii.gz", "no such file"),
        "3d": (_save(root / "mask.nii.gz", np.ones((6, 6, 6)), affine), "4D"),
        "channels": (_save(root / "six.nii.gz", np.ones((6, 6, 6, 6)), affine), "9"),
        "unreadable": (garbage, "not a NIfTI image"),
        "empty": (_save(root / "zeros.nii.gz", np.zeros((6, 6, 6, 9)), affine), "zero"),
    }


@pytest.mark.parametrize("case", ["missing", "3d", "channels", "unreadable", "empty"])
def test_bad_peaks_get_one_line_and_exit_1(capsys, tmp_path, case):
    path, what = _bad_inputs(tmp_path)[case]
    code, out, err = _cli(capsys, path)
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"{PROG}: error: {path}: ") and what in err


def test_bad_dwi_inputs_get_one_line_and_exit_1(capsys, tmp_path):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    dwi = _save(tmp_path / "dwi.nii.gz", np.ones((6, 6, 6, 7)), affine)
    code, out, err = _cli(capsys, dwi, "--raw_diffusion_input")
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith(f"{PROG}: error: {tmp_path / 'dwi.bvals'}: ") and "not found" in err


def test_gradient_options_need_raw_input(capsys, tmp_path):
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path / "p.nii.gz"), "--bvals", "b"])
    assert stop.value.code == 2 and "--raw_diffusion_input" in capsys.readouterr().err


def test_module_runs_without_jax_or_torch(tmp_path, arcs):
    path = _save(tmp_path / "arcs.nii.gz", *arcs)
    done = run_module("runtime.orientation", str(path), "--json", timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["flip"] == "none"



# --- in the run: --orientation check | fix | off ------------------------------------------------------------------

def test_the_run_checks_fixes_or_skips_the_orientation(tract_small, tmp_path, capsys, arcs):
    """tractseg-aot on coherent synthetic tracts with the y axis flipped: ``check`` (default) warns once naming
    the axis and records the verdict; ``fix`` gives exactly the masks of the unflipped input; ``off`` records
    nothing; the correct input gives no warning."""
    from runtime.run import main as run_main

    data, affine = arcs
    right = _save(tmp_path / "right.nii.gz", data, affine)
    flipped = _save(tmp_path / "flipped.nii.gz", apply_flip(data, affine, "y"), affine)

    def run(peaks: Path, name: str, *extra: str) -> tuple[dict, list[str]]:
        report = tmp_path / f"{name}.json"
        code = run_main([str(peaks), "-o", str(tmp_path / name), "--artifacts", str(tract_small), "--quiet",
                         "--report", str(report), *extra])
        err = capsys.readouterr().err
        assert code == 0, err
        return json.loads(report.read_text()), [line for line in err.splitlines() if "flipped" in line]

    checked, warned = run(right, "right")
    assert checked["orientation"]["flip"] == "none" and checked["orientation"]["confident"] and not warned
    checked, warned = run(flipped, "check")
    assert checked["orientation"]["flip"] == "y" and checked["orientation"]["applied"] is False
    assert len(warned) == 1 and "y axis looks flipped" in warned[0] and "--orientation fix" in warned[0]
    fixed, warned = run(flipped, "fix", "--orientation", "fix")
    assert fixed["orientation"]["applied"] is True and len(warned) == 1
    masks = lambda name: {p.name: np.asarray(nib.load(p).dataobj)  # noqa: E731
                          for p in sorted((tmp_path / name / "bundle_segmentations").iterdir())}
    ours, reference = masks("fix"), masks("right")
    assert len(ours) == 72 and all(np.array_equal(ours[k], reference[k]) for k in ours)
    assert sum(int(v.sum()) for v in ours.values()) > 0
    unfixed = masks("check")  # the flip matters to the network: without the fix the masks differ
    assert any(not np.array_equal(unfixed[k], reference[k]) for k in reference)
    skipped, warned = run(flipped, "off", "--orientation", "off")
    assert skipped["orientation"] is None and not warned
