"""runtime.tractometry against upstream TractSeg 2.10's ``Tractometry`` CLI on the same tractograms, endings masks
and scalar map (real NIfTI / .trk / .tck files): the CSV's header identical and every value within 1e-5; bad input
(one line, exit 1, no CSV)."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("dipy", reason="the [tracking] extra (dipy) is not installed")

from tests.test_tracking import _stored_points  # noqa: E402
from benchmarks.tracking import run_measured, tractometry_command, write_phantom  # noqa: E402
from tests.no_jax import run_module  # noqa: E402
from runtime.tracking import TrackingOptions, track_output_folder  # noqa: E402
from runtime.tracking.writers import save_tractogram  # noqa: E402
from runtime.tractometry import TRACTOMETRY_BUNDLES, profile, tractometry  # noqa: E402
from runtime.tractometry.__main__ import main  # noqa: E402

TRACKED = ["CST_right", "AF_left"]
FEW = "UF_left"  # fewer than 5 streamlines: upstream writes zeros


@pytest.fixture(scope="module")
def subject(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tractometry")
    out = write_phantom(root, TRACKED + [FEW], endings_only=tuple(b for b in TRACTOMETRY_BUNDLES
                                                                 if b not in TRACKED + [FEW]))
    # AF_left's beginnings are the other end of the arc: the flips in orient_to_same_start_region get exercised.
    b, e = (out / "endings_segmentations" / f"AF_left_{x}.nii.gz" for x in "be")
    b_bytes, e_bytes = b.read_bytes(), e.read_bytes()
    b.write_bytes(e_bytes)
    e.write_bytes(b_bytes)
    for fmt, n in (("trk", 300), ("tck", 120)):
        track_output_folder(out, TRACKED, TrackingOptions(nr_fibers=n, tracking_format=fmt, seed=11), fmt)
        mask = nib.load(str(out / "bundle_segmentations" / f"{FEW}.nii.gz"))
        three = nib.streamlines.load(str(out / fmt / f"CST_right.{fmt}")).streamlines[:3]
        save_tractogram(out / fmt / f"{FEW}.{fmt}", list(three), mask.affine, mask.shape, fmt)
    return root


@pytest.mark.parametrize("fmt", ["trk", "tck"])
def test_csv_equals_upstream_tractometry(subject, fmt):
    pytest.importorskip("tractseg", reason="upstream tractseg (the [parity] extra) is not installed")
    out = subject / "tractseg_output"
    args = (out / fmt, None, out / "endings_segmentations", subject / "FA.nii.gz", fmt)
    for upstream, csv in ((True, subject / f"upstream_{fmt}.csv"), (False, subject / f"ours_{fmt}.csv")):
        run_measured(tractometry_command(upstream, args[0], csv, *args[2:]))
    theirs, ours = (subject / f"{who}_{fmt}.csv" for who in ("upstream", "ours"))
    assert ours.read_text().splitlines()[0] == theirs.read_text().splitlines()[0] == ";".join(TRACTOMETRY_BUNDLES)
    a = np.loadtxt(ours, delimiter=";", skiprows=1)
    b = np.loadtxt(theirs, delimiter=";", skiprows=1)
    assert a.shape == b.shape == (98, len(TRACTOMETRY_BUNDLES))
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    columns = [TRACTOMETRY_BUNDLES.index(x) for x in TRACKED]
    assert np.ptp(b[:, columns], axis=0).min() > 0.1  # real profiles along the bundle, not constants
    assert not b[:, TRACTOMETRY_BUNDLES.index(FEW)].any()  # < 5 streamlines: zeros in both


def test_api_profile_and_table(subject):
    """The API: profile() of one bundle equals the table's column; AF_left's reversed end masks give the reversed
    profile of the same geometry (the orientation step works)."""
    out = subject / "tractseg_output"
    table = tractometry(out / "trk", out / "endings_segmentations", subject / "FA.nii.gz", 100, "trk",
                        bundles=TRACKED)
    fa = nib.load(str(subject / "FA.nii.gz"))
    streamlines = nib.streamlines.load(str(out / "trk" / "CST_right.trk")).streamlines
    beginnings = nib.load(str(out / "endings_segmentations" / "CST_right_b.nii.gz")).get_fdata()
    mean, std = profile(streamlines, beginnings, fa.get_fdata(), fa.affine, 100)
    np.testing.assert_array_equal(table.mean[0], mean[1:-1])
    assert len(table.std[0]) == 98 and (table.std[0] >= 0).all()
    cst, af = table.mean
    assert np.corrcoef(cst, af[::-1])[0, 1] > 0.9 and np.corrcoef(cst, af)[0, 1] < 0


def test_trk_legacy_as_upstream_would_profile_it(subject, tmp_path):
    """trk_legacy: upstream read it with nibabel<5's ``trackvis.read`` (the stored voxmm numbers, which for its
    legacy header are RAS mm) and passed them to ``evaluate_along_streamlines``; ours must give the same profile."""
    tractometry_lib = pytest.importorskip("tractseg.libs.tractometry", reason="upstream tractseg is not installed")
    out = subject / "tractseg_output"
    track_output_folder(out, ["CST_right"], TrackingOptions(nr_fibers=100, tracking_format="trk_legacy", seed=5),
                        "legacy")
    table = tractometry(out / "legacy", out / "endings_segmentations", subject / "FA.nii.gz", 100, "trk_legacy",
                        bundles=["CST_right"])
    stored = _stored_points(out / "legacy" / "CST_right.trk")
    fa = nib.load(str(subject / "FA.nii.gz"))
    beginnings = nib.load(str(out / "endings_segmentations" / "CST_right_b.nii.gz")).get_fdata()
    mean, _ = tractometry_lib.evaluate_along_streamlines(np.nan_to_num(fa.get_fdata()), stored, beginnings, 100,
                                                         dilate=2, affine=fa.affine)
    np.testing.assert_allclose(table.mean[0], np.asarray(mean)[1:-1], rtol=0, atol=1e-5)


def _cut_after(path: Path, target: Path, kept: int) -> None:
    """``path`` (a .trk) cut after its first ``kept`` streamlines: a file nibabel reads without complaint."""
    data = path.read_bytes()
    at = 1000
    for _ in range(kept):
        at += 4 + 12 * int(np.frombuffer(data, "<i4", 1, at)[0])
    target.write_bytes(data[:at])


@pytest.mark.parametrize("damage", ["scalar shape", "missing endings", "scalar missing", "bad tractogram",
                                    "truncated trk", "truncated trx", "format matches no file", "outside the grid"])
def test_bad_input_one_line_exit_1_no_csv(subject, tmp_path, capfd, damage):
    """Issue 26 items 7-9: a truncated .trk (cut at a streamline boundary, which nibabel reads as a shorter file),
    a --tracking_format that no file has, and streamlines outside the scalar map's grid were exit 0 with a CSV
    (the first two) or exit 3 (the last); all are one line naming the file, exit 1, no CSV."""
    out = subject / "tractseg_output"
    endings, scalar, tracking = out / "endings_segmentations", subject / "FA.nii.gz", out / "trk"
    fmt = "trk"
    if damage == "scalar shape":
        culprit = tmp_path / "FA_small.nii.gz"
        nib.save(nib.Nifti1Image(np.ones((10, 10, 10), np.float32), np.eye(4)), str(culprit))
        scalar = culprit
    elif damage == "missing endings":
        endings = tmp_path / "endings"
        endings.mkdir()
        culprit = endings / "AF_left_b.nii.gz"
    elif damage == "scalar missing":
        scalar = culprit = tmp_path / "nope.nii.gz"
    elif damage == "bad tractogram":
        tracking = tmp_path / "trk"
        tracking.mkdir()
        culprit = tracking / "CST_right.trk"
        culprit.write_bytes(b"not a tractogram")
    elif damage == "truncated trk":
        tracking = tmp_path / "trk"
        tracking.mkdir()
        culprit = tracking / "CST_right.trk"
        _cut_after(out / "trk" / "CST_right.trk", culprit, 200)
        assert len(nib.streamlines.load(str(culprit)).streamlines) == 200  # nibabel alone does not notice
    elif damage == "truncated trx":
        pytest.importorskip("trx", reason="trx-python (the [tracking] extra) is not installed")
        tracking, fmt = tmp_path / "trx", "trx"
        track_output_folder(out, ["CST_right"], TrackingOptions(nr_fibers=20, tracking_format="trx"), tmp_path / "trx")
        culprit = tracking / "CST_right.trx"
        culprit.write_bytes(culprit.read_bytes()[:-300])
    elif damage == "format matches no file":
        culprit, fmt = tracking, "tck"
    else:
        tracking = tmp_path / "trk"
        tracking.mkdir()
        culprit = tracking / "CST_right.trk"
        mask = nib.load(str(out / "bundle_segmentations" / "CST_right.nii.gz"))
        moved = [s + 1000.0 for s in nib.streamlines.load(str(out / "trk" / "CST_right.trk")).streamlines]
        save_tractogram(culprit, moved, mask.affine, mask.shape, "trk")
    csv = tmp_path / "out.csv"
    capfd.readouterr()
    assert main(["-i", str(tracking), "-o", str(csv), "-e", str(endings), "-s", str(scalar), "--tracking_format",
                 fmt, "--quiet"]) == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"tractseg-aot-tractometry: error: {culprit}"), err
    if damage == "format matches no file":
        assert "--tracking_format tck" in err[0] and "3 .trk files (AF_left.trk, CST_right.trk, UF_left.trk)" in err[0]
    assert not csv.exists() and not list(tmp_path.glob(".tmp-*"))


def test_command_line_as_the_issue_runs_it(subject, tmp_path):
    out = subject / "tractseg_output"
    csv = tmp_path / "OUT.csv"
    command = tractometry_command(False, out / "trk", csv, out / "endings_segmentations", subject / "FA.nii.gz")
    done = run_module("runtime.tractometry", *command[4:], timeout=60)  # jax, torch, export/, tractseg blocked
    assert done.returncode == 0, done.stderr
    assert csv.read_text().splitlines()[0] == ";".join(TRACTOMETRY_BUNDLES)


def test_bundles_without_a_tractogram_one_info_line(subject, tmp_path, capfd):
    """Issue 26 item 11: three tracked bundles printed 47 "no tracking found" lines; now one info line with the
    count, the CSV still upstream's 50 columns (zeros where no tractogram); --bundles gives the chain's columns,
    the same values."""
    out = subject / "tractseg_output"
    common = ["-i", str(out / "trk"), "-e", str(out / "endings_segmentations"), "-s", str(subject / "FA.nii.gz"),
              "--tracking_format", "trk"]
    capfd.readouterr()
    assert main(common + ["-o", str(tmp_path / "all.csv")]) == 0
    captured = capfd.readouterr()
    lines = [line for line in captured.out.splitlines() + captured.err.splitlines() if "tractogram" in line]
    assert lines == [f"tractseg-aot-tractometry: 47 of 50 bundles have no trk tractogram in {out / 'trk'}: their columns are "
                     "zeros (as upstream; --bundles leaves them out)"], lines
    assert "no tracking found" not in captured.err
    everything = np.loadtxt(tmp_path / "all.csv", delimiter=";", skiprows=1)
    assert everything.shape == (98, 50) and (np.abs(everything).sum(axis=0) > 0).sum() == 2  # UF_left: < 5
    assert main(common + ["-o", str(tmp_path / "two.csv"), "--bundles", "CST_right,AF_left", "--quiet"]) == 0
    header = (tmp_path / "two.csv").read_text().splitlines()[0]
    assert header == "CST_right;AF_left"
    two = np.loadtxt(tmp_path / "two.csv", delimiter=";", skiprows=1)
    np.testing.assert_array_equal(two, everything[:, [TRACTOMETRY_BUNDLES.index(b) for b in ("CST_right", "AF_left")]])
    capfd.readouterr()
    assert main(common + ["-o", str(tmp_path / "x.csv"), "--bundles", "CC", "--quiet"]) == 1
    assert capfd.readouterr().err.startswith("tractseg-aot-tractometry: error: --bundles: CC: not profiled by upstream's")


def test_trx_profiles_equal_trk_profiles(subject, tmp_path):
    """--tracking_format trx: the .trk's streamlines (float32 as nibabel reads them) written as .trx give the .trk's
    profiles exactly; the same seed tracked straight into .trx (RAS mm float32, where the .trk holds voxmm float32:
    the points differ by float32 rounding, ~1e-5 mm) gives them within 1e-4 (such a shift moves the odd sample
    point across a segment boundary, the nearest-centroid assignment)."""
    pytest.importorskip("trx", reason="trx-python (the [tracking] extra) is not installed")
    out = subject / "tractseg_output"
    mask = nib.load(str(out / "bundle_segmentations" / "CST_right.nii.gz"))
    for bundle in TRACKED:
        same = nib.streamlines.load(str(out / "trk" / f"{bundle}.trk")).streamlines
        save_tractogram(tmp_path / "copied" / f"{bundle}.trx", same, mask.affine, mask.shape, "trx")
    track_output_folder(out, TRACKED, TrackingOptions(nr_fibers=300, tracking_format="trx", seed=11), tmp_path / "trx")
    trk = tractometry(out / "trk", out / "endings_segmentations", subject / "FA.nii.gz", 100, "trk", bundles=TRACKED)
    for folder, tolerance in (("copied", 0), ("trx", 1e-4)):
        csv = tmp_path / f"{folder}.csv"
        assert main(["-i", str(tmp_path / folder), "-o", str(csv), "-e", str(out / "endings_segmentations"), "-s",
                     str(subject / "FA.nii.gz"), "--tracking_format", "trx", "--bundles", ",".join(TRACKED),
                     "--quiet"]) == 0
        values = np.loadtxt(csv, delimiter=";", skiprows=1)
        np.testing.assert_allclose(values, np.array(trk.mean).T, rtol=0, atol=tolerance, err_msg=folder)
        assert np.ptp(values, axis=0).min() > 0.1
