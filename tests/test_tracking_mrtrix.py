"""runtime.tracking's MRtrix modes and --track_best_orig against upstream TractSeg 2.10 (its installed code is the
reference throughout): the mode and folder its ``Tracking`` picks for every flag combination, its exact ``tckgen``
command lines, its mask files, its best original peaks; and real ``tckgen`` runs on the curved-bundle phantom,
compared with upstream's ``Tracking --algorithm det`` / ``--track_FODs FACT`` on the same folder statistically
(tckgen seeds at random): counts, streamlines through the dilated end masks and inside the bundle mask, density
Dice >= 0.9, the same file names and header geometry.
"""
from __future__ import annotations

import itertools
import runpy
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import binary_dilation

pytest.importorskip("dipy", reason="the [tracking] extra (dipy) is not installed")

from benchmarks.tracking import Phantom, run_measured, upstream_script, write_phantom  # noqa: E402
from runtime.errors import InputError  # noqa: E402
from runtime.tracking.__main__ import main  # noqa: E402
from runtime.tracking.best_orig import best_original_peaks  # noqa: E402
from runtime.tracking.modes import folder_name, tracking_mode  # noqa: E402
from runtime.tracking.tckgen import dilated_mask, peak_mask, tckgen_argv  # noqa: E402
from tests.test_tracking import _visited  # noqa: E402

BUNDLE = "CST_right"
N_FIBERS = 300
needs_tckgen = pytest.mark.skipif(shutil.which("tckgen") is None,
                                  reason="MRtrix 3 not installed (tckgen not on PATH; apt-get install mrtrix3)")


def _upstream(name: str):
    return pytest.importorskip(f"tractseg.libs.{name}", reason="upstream tractseg (the [parity] extra) not installed")


class _NumpyOgridAsList:
    """numpy as upstream's ``get_best_original_peaks`` was written for: ``[argmax] + np.ogrid[...]`` needs the list
    numpy < 2 returned (numpy 2 returns a tuple: TypeError, so upstream's --track_best_orig fails on numpy 2). Only
    ``ogrid`` differs; the reference computation is upstream's own code."""

    class _Ogrid:
        def __getitem__(self, key):
            return list(np.ogrid[key])

    ogrid = _Ogrid()

    def __getattr__(self, name):
        return getattr(np, name)


def _upstream_fiber_utils(monkeypatch):
    fiber_utils = _upstream("fiber_utils")
    monkeypatch.setattr(fiber_utils, "np", _NumpyOgridAsList())
    return fiber_utils


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tracking_mrtrix")
    write_phantom(root, [BUNDLE, "AF_left"], empty=("AF_left",))
    return root


def test_modes_and_folders_as_upstreams_tracking_decides(monkeypatch, tmp_path):
    """bin/Tracking itself, its per-bundle call recorded, for all 32 flag combinations."""
    tracking, calls = _upstream("tracking"), []
    monkeypatch.setattr(tracking, "track", lambda *a, **k: calls.append((a, k)))
    for algorithm, fods, best, no_filter in itertools.product(("prob", "det"), ("False", "FACT", "SD_STREAM", "iFOD2"),
                                                              (False, True), (False, True)):
        flags = ["--algorithm", algorithm, "--track_FODs", fods] + ["--track_best_orig"] * best + [
            "--no_filtering_by_endpoints"] * no_filter
        monkeypatch.setattr(sys, "argv", ["Tracking", "-i", str(tmp_path / "peaks.nii.gz"), "-o", str(tmp_path),
                                          "--bundles", BUNDLE, *flags])
        calls.clear()
        runpy.run_path(str(upstream_script("Tracking")), run_name="__main__")
        (_, _, _, on_fods, software, algorithm_used), options = calls[0]
        if on_fods and no_filter:  # upstream's help: does not work together; refused here
            with pytest.raises(InputError, match="--no_filtering_by_endpoints"):
                tracking_mode(algorithm, fods, best, no_filter)
            continue
        mode = tracking_mode(algorithm, fods, best, no_filter)
        assert (mode.on_fods, mode.software, mode.algorithm) == (on_fods, software, algorithm_used), flags
        assert mode.filter_by_endpoints == options["filter_by_endpoints"]
        assert mode.best_orig == (options["use_best_original_peaks"] and software == "tractseg" and not no_filter)
        assert folder_name(mode, best) == tracking.get_tracking_folder_name(algorithm_used, best), flags


@pytest.mark.parametrize("fods,nr_cpus,dilation", [("False", -1, 0), ("False", 2, 1), ("FACT", -1, 0),
                                                   ("SD_STREAM", 3, 0), ("iFOD2", -1, 2)])
def test_tckgen_command_is_upstreams(monkeypatch, tmp_path, fods, nr_cpus, dilation):
    """upstream's ``tracking.track`` run with its shell calls recorded (not run): the tckgen string equals ours,
    token for token, given the same paths (its temporary folder pinned)."""
    tracking, commands = _upstream("tracking"), []
    out = write_phantom(tmp_path, [BUNDLE], Phantom(shape=(24, 10, 20), ring=7, tube=2))
    staging = tmp_path / "staging"
    staging.mkdir()
    monkeypatch.setattr(tracking.subprocess, "call", lambda command, shell: commands.append(command))
    monkeypatch.setattr(tracking.tempfile, "mkdtemp", lambda: str(staging))
    mode = tracking_mode("det" if fods == "False" else "prob", fods)
    folder = folder_name(mode, False)
    peaks = str(tmp_path / "peaks.nii.gz")
    tracking.track(BUNDLE, peaks, str(out), mode.on_fods, mode.software, mode.algorithm, dilation=dilation,
                   output_format="tck", nr_fibers=123, nr_cpus=nr_cpus)
    (upstream_command,) = [c for c in commands if c.startswith("tckgen")]
    source = peaks if mode.on_fods else f"{out}/TOM/{BUNDLE}.nii.gz"
    masks = tuple(f"{staging}/{BUNDLE}{suffix}.nii.gz" for suffix in ("", "_b", "_e"))
    ours = tckgen_argv(mode, source, f"{out}/{folder}/{BUNDLE}.tck", 123, nr_cpus, masks=masks)
    assert " ".join(ours) == upstream_command


def test_no_filtering_command_as_upstreams_source():
    """Upstream 2.10 never reaches this tckgen call (UnboundLocalError before it), so its source is the reference."""
    mode = tracking_mode("prob", no_filtering_by_endpoints=True)
    argv = tckgen_argv(mode, "o/TOM/B.nii.gz", "o/TOM_trackings/B.tck", 50, 4, seed_image="t/peak_mask.nii.gz")
    assert " ".join(argv) == ("tckgen -algorithm FACT o/TOM/B.nii.gz o/TOM_trackings/B.tck -seed_image "
                              "t/peak_mask.nii.gz -minlength 40 -maxlength 250 -select 50 -force -quiet -nthreads 4")


def test_mask_files_equal_upstreams(tmp_path):
    """Dilated masks (0, 1, 2 iterations; fractional values) and the peak mask (NaNs, short peaks) as upstream's
    functions write them: same voxels, dtype, shape and affine."""
    img_utils, peak_utils = _upstream("img_utils"), _upstream("peak_utils")
    rng = np.random.default_rng(0)
    affine = np.diag([-1.25, 1.25, 1.25, 1.0])
    affine[:3, 3] = [90, -126, -72]
    mask = np.where(rng.random((14, 12, 10)) < 0.05, rng.choice([0.3, 0.6, 1.0], (14, 12, 10)), 0).astype(np.float32)
    nib.save(nib.Nifti1Image(mask, affine), str(tmp_path / "mask.nii.gz"))
    peaks = rng.normal(0, 0.02, (14, 12, 10, 9)).astype(np.float32)
    peaks[rng.random(peaks.shape) < 0.01] = np.nan
    nib.save(nib.Nifti1Image(peaks, affine), str(tmp_path / "peaks.nii.gz"))
    cases = [(dilated_mask(tmp_path / "mask.nii.gz", n), lambda path, n=n: img_utils.dilate_binary_mask(
        str(tmp_path / "mask.nii.gz"), str(path), dilation=n)) for n in (0, 1, 2)]
    cases.append((peak_mask(tmp_path / "peaks.nii.gz"), lambda path: peak_utils.peak_image_to_binary_mask_path(
        str(tmp_path / "peaks.nii.gz"), str(path), peak_length_threshold=0.01)))
    for ours, write_theirs in cases:
        write_theirs(tmp_path / "theirs.nii.gz")
        theirs = nib.load(str(tmp_path / "theirs.nii.gz"))
        assert ours.get_data_dtype() == theirs.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(np.asanyarray(ours.dataobj), np.asanyarray(theirs.dataobj))
        np.testing.assert_array_equal(ours.affine, theirs.affine)
        assert 0 < np.asanyarray(ours.dataobj).sum() < np.asanyarray(ours.dataobj).size  # neither empty nor full
    assert peak_mask(tmp_path / "peaks.nii.gz").shape == (14, 12, 10, 3)  # one volume per peak, as upstream


def test_best_original_peaks_equal_upstreams(monkeypatch):
    """Random float64 peaks (as get_fdata gives them) with NaNs, short TOM peaks, zero peaks and exact ties
    (a peak and its negative, duplicates): every value equal to upstream's ``get_best_original_peaks``."""
    fiber_utils = _upstream_fiber_utils(monkeypatch)
    rng = np.random.default_rng(1)
    tom = rng.normal(size=(9, 8, 7, 3))
    tom[rng.random(tom.shape[:3]) < 0.2] *= 0.05  # below the 0.1 length threshold
    peaks = rng.normal(size=(9, 8, 7, 9))
    peaks[rng.random(peaks.shape) < 0.02] = np.nan
    peaks[..., 6:9][rng.random(tom.shape[:3]) < 0.2] = 0
    ties = rng.random(tom.shape[:3]) < 0.2
    peaks[..., 3:6][ties] = -peaks[..., 0:3][ties]
    duplicates = rng.random(tom.shape[:3]) < 0.1
    peaks[..., 6:9][duplicates] = peaks[..., 3:6][duplicates]
    expected = fiber_utils.get_best_original_peaks(tom.copy(), peaks.copy())
    ours = best_original_peaks(tom, peaks)
    np.testing.assert_array_equal(ours, expected)
    chosen = [np.all(ours == np.nan_to_num(peaks[..., 3 * k:3 * k + 3]), -1) & (np.abs(ours).sum(-1) > 0)
              for k in range(3)]
    assert all(c.any() for c in chosen)  # each of the three input peaks is the best somewhere


def test_track_best_orig_tracks_the_best_peaks(tmp_path, monkeypatch):
    """--track_best_orig: BestOrig_trackings/<bundle>.nii.gz equals upstream's best peaks of the files (upstream's
    own MNI flips around it) with the input's affine, and the tractogram is byte for byte the default mode's (same
    seed) on a copy of the folder whose TOM is those best peaks; it differs from the default mode on the TOM (the
    best peak here is the TOM plus a little noise, which moves every step)."""
    fiber_utils, img_utils = _upstream_fiber_utils(monkeypatch), _upstream("img_utils")
    out = write_phantom(tmp_path, [BUNDLE], Phantom(shape=(24, 10, 20), ring=7, tube=2))
    source = nib.load(str(tmp_path / "peaks.nii.gz"))
    tom_image = nib.load(str(out / "TOM" / f"{BUNDLE}.nii.gz"))
    tom = tom_image.get_fdata()
    rng = np.random.default_rng(2)
    across = np.cross(tom, [0.0, 1.0, 0.0]) * 0.8  # perpendicular first peak; the TOM + noise second; noise third
    peaks = np.concatenate([across, tom + rng.normal(0, 0.05, tom.shape), rng.normal(0, 0.3, tom.shape)], -1)
    peaks = peaks.astype(np.float32)
    nib.save(nib.Nifti1Image(peaks, source.affine), str(tmp_path / "peaks.nii.gz"))
    orig, axes = img_utils.flip_axis_to_match_MNI_space(peaks.astype(np.float64), source.affine)
    flipped_tom, _ = img_utils.flip_axis_to_match_MNI_space(tom, source.affine)
    expected = fiber_utils.get_best_original_peaks(flipped_tom, orig)
    for axis in axes:
        expected = img_utils.flip_axis(expected, axis)
    assert axes  # the phantom's positive x is flipped, so the flips are exercised
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    nib.save(nib.Nifti1Image(expected.astype(np.float32), tom_image.affine), str(copy / "TOM" / f"{BUNDLE}.nii.gz"))

    def track(folder: Path, *flags: str) -> None:
        assert main(["-i", str(tmp_path / "peaks.nii.gz"), "-o", str(folder), "--bundles", BUNDLE, "--nr_fibers",
                     "60", "--tracking_format", "trk", "--seed", "5", "--quiet", *flags]) == 0

    track(out, "--track_best_orig")
    track(out)
    track(copy)
    saved = nib.load(str(out / "BestOrig_trackings" / f"{BUNDLE}.nii.gz"))
    np.testing.assert_array_equal(saved.get_fdata(), expected)
    np.testing.assert_array_equal(saved.affine, source.affine)
    best_orig = (out / "BestOrig_trackings" / f"{BUNDLE}.trk").read_bytes()
    assert best_orig == (copy / "TOM_trackings" / f"{BUNDLE}.trk").read_bytes()
    assert best_orig != (out / "TOM_trackings" / f"{BUNDLE}.trk").read_bytes()
    assert len(nib.streamlines.load(str(out / "BestOrig_trackings" / f"{BUNDLE}.trk")).streamlines) == 60


def _check_tckgen_tractogram(path: Path, out: Path, dilation: int = 0) -> nib.streamlines.TrkFile:
    """N streamlines, every point in the dilated bundle mask and every streamline through (for this phantom's
    open tube: starting and ending in) the end masks dilated dilation + 1, nearest voxel; header = bundle mask's."""
    reference = nib.load(str(out / "bundle_segmentations" / f"{BUNDLE}.nii.gz"))
    tractogram = nib.streamlines.load(str(path))
    streamlines = tractogram.streamlines
    assert len(streamlines) == N_FIBERS
    bundle = binary_dilation(reference.get_fdata() > 0, iterations=dilation) if dilation else reference.get_fdata() > 0
    ends = [binary_dilation(nib.load(str(out / "endings_segmentations" / f"{BUNDLE}_{e}.nii.gz")).get_fdata() > 0,
                            iterations=dilation + 1) for e in "be"]
    inverse = np.linalg.inv(reference.affine)
    for s in streamlines:
        ijk = tuple(np.rint(s @ inverse[:3, :3].T + inverse[:3, 3]).astype(int).T)
        assert bundle[ijk].all()
        first, last = (e[ijk][[0, -1]] for e in ends)
        assert (first[0] and last[1]) or (first[1] and last[0])
    if path.suffix == ".trk":
        np.testing.assert_allclose(tractogram.header["voxel_to_rasmm"], reference.affine, atol=1e-6)
        assert tuple(tractogram.header["dimensions"]) == reference.shape
    return tractogram


@needs_tckgen
@pytest.mark.parametrize("flags,folder", [(["--algorithm", "det"], "Peaks_FACT_trackings"),
                                          (["--track_FODs", "FACT"], "Peaks_FACT_trackings")])
def test_tckgen_modes_statistically_equal_to_upstream(phantom, flags, folder):
    """Ours (auto folder) and upstream's Tracking (its --tracking_dir) on the same folder, trk: the same file names,
    both tractograms pass the same checks, density Dice >= 0.9; the empty bundle gives an empty tractogram."""
    _upstream("tracking")
    out = phantom / "tractseg_output"
    common = ["-i", str(phantom / "peaks.nii.gz"), "-o", str(out), "--bundles", f"{BUNDLE},AF_left", "--nr_fibers",
              str(N_FIBERS), "--tracking_format", "trk", "--nr_cpus", "2"]
    theirs_dir = f"upstream_{flags[-1]}"
    run_measured([sys.executable, str(upstream_script("Tracking")), *common, *flags, "--tracking_dir", theirs_dir])
    assert main(common + flags + ["--quiet", "--force"]) == 0  # both parameters write Peaks_FACT_trackings
    ours, theirs = out / folder, out / theirs_dir
    assert sorted(p.name for p in ours.iterdir() if p.suffix != ".json") == sorted(p.name for p in theirs.iterdir())
    reference = nib.load(str(out / "bundle_segmentations" / f"{BUNDLE}.nii.gz"))
    a = _check_tckgen_tractogram(ours / f"{BUNDLE}.trk", out).streamlines
    b = _check_tckgen_tractogram(theirs / f"{BUNDLE}.trk", out).streamlines
    dice = 2 * (_visited(a, reference) & _visited(b, reference)).sum() / (
        _visited(a, reference).sum() + _visited(b, reference).sum())
    assert dice >= 0.9, dice
    assert len(nib.streamlines.load(str(ours / "AF_left.trk")).streamlines) == 0


@needs_tckgen
def test_det_formats_and_dilation(phantom):
    """tck is tckgen's own file; trk_legacy (which crashes upstream on nibabel 5) holds upstream's legacy header;
    --tracking_dilation 1 dilates the bundle mask once and the end masks twice."""
    out = phantom / "tractseg_output"
    common = ["-i", str(phantom / "peaks.nii.gz"), "-o", str(out), "--bundles", BUNDLE, "--nr_fibers", str(N_FIBERS),
              "--algorithm", "det", "--quiet"]
    assert main(common + ["--tracking_format", "tck", "--tracking_dir", "det_tck", "--tracking_dilation", "1"]) == 0
    tck = out / "det_tck" / f"{BUNDLE}.tck"
    head = tck.read_bytes()[:1000]
    assert head.startswith(b"mrtrix tracks") and b"command_history: tckgen -algorithm FACT" in head
    _check_tckgen_tractogram(tck, out, dilation=1)
    assert main(common + ["--tracking_format", "trk_legacy", "--tracking_dir", "det_legacy"]) == 0
    legacy = nib.streamlines.load(str(out / "det_legacy" / f"{BUNDLE}.trk"))
    expected = np.abs(nib.load(str(out / "bundle_segmentations" / f"{BUNDLE}.nii.gz")).affine)
    expected[:3, 3] = 0
    np.testing.assert_allclose(legacy.header["voxel_to_rasmm"], expected, atol=1e-6)
    assert len(legacy.streamlines) == N_FIBERS


@needs_tckgen
def test_no_filtering_by_endpoints_runs_fact_from_the_peak_mask(phantom):
    """Upstream 2.10 crashes here (UnboundLocalError); its code's intent: FACT on the TOM, seeded from the input's
    peak mask, no end filtering: N streamlines of 40-250 mm written to TOM_trackings."""
    out = phantom / "tractseg_output"
    assert main(["-i", str(phantom / "peaks.nii.gz"), "-o", str(out), "--bundles", BUNDLE, "--nr_fibers", "100",
                 "--tracking_format", "trk", "--no_filtering_by_endpoints", "--tracking_dir", "no_filter",
                 "--quiet"]) == 0
    streamlines = nib.streamlines.load(str(out / "no_filter" / f"{BUNDLE}.trk")).streamlines
    lengths = np.array([np.linalg.norm(np.diff(s, axis=0), axis=1).sum() for s in streamlines])
    assert len(streamlines) == 100 and lengths.min() >= 40 - 0.5 and lengths.max() <= 250


def test_missing_tckgen_is_one_line(phantom, monkeypatch, capfd):
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    capfd.readouterr()
    out = phantom / "tractseg_output"
    assert main(["-i", str(phantom / "peaks.nii.gz"), "-o", str(out), "--bundles", BUNDLE, "--algorithm", "det",
                 "--tracking_dir", "no_tckgen", "--quiet"]) == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tractseg-aot-tracking: error: tckgen: not found on PATH"), err
    assert not (out / "no_tckgen").exists()


@needs_tckgen
def test_failing_tckgen_is_one_line_nothing_written(phantom, capfd):
    """SD_STREAM on a 9-volume peak image (not an SH image): tckgen fails; its error, one line, exit 1, no
    tractogram, no staging folder left."""
    out = phantom / "tractseg_output"
    capfd.readouterr()
    assert main(["-i", str(phantom / "peaks.nii.gz"), "-o", str(out), "--bundles", BUNDLE, "--track_FODs",
                 "SD_STREAM", "--tracking_dir", "failing", "--quiet"]) == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"tractseg-aot-tracking: error: {BUNDLE}: tckgen") and "\x1b" not in err[0], err
    assert "[ERROR]" in err[0]
    assert not (out / "failing").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".tckgen-")]
