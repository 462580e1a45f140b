"""runtime.chain and the study runner's --chain on real small bundles (S=16: the fast suite's tract_segmentation and
endings_segmentation bundles, test_tom's TOM bundle) and real NIfTI volumes: the chain (its command line, in an
interpreter that refuses JAX and torch) equals its five steps run one by one with their own commands, the study
table equals the subjects' CSVs, the report's tractometry section flags a far profile, and bad input is one line,
exit 1, before any network runs, nothing written."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("dipy", reason="the [tracking] extra (dipy) is not installed")

from runtime.chain.__main__ import main as chain_main  # noqa: E402
from runtime.chain.resume import RECORD_NAME  # noqa: E402
from runtime.models.bundles import TRACTQUERIER_BUNDLES  # noqa: E402
from runtime.tractometry.table import TRACTOMETRY_BUNDLES, read_csv  # noqa: E402
from tests.no_jax import run_module  # noqa: E402
from tests.run_support import check_one_error, files_under, save_peaks, synthetic_peaks  # noqa: E402
from tests.tom_support import export_bundle, weights_dir  # noqa: E402

SHAPE = (22, 26, 19)
BUNDLES = ["AF_left", "ATR_left", "CC_1", "CA"]  # CA is tracked, not profiled (upstream's Tractometry skips it)
PROFILED = ["AF_left", "ATR_left", "CC_1"]
TRACKING = ["--bundles", ",".join(BUNDLES), "--nr_fibers", "30", "--tracking_format", "trk", "--seed", "5"]


def write_subject(folder: Path, name: str, seed: int) -> tuple[Path, Path]:
    """Peaks (synthetic, LAS 2.5 mm) and an FA-like map (the first peak's length) on the same grid."""
    peaks = save_peaks(folder / f"{name}_peaks.nii.gz", synthetic_peaks(SHAPE, seed=seed))
    image = nib.load(peaks)
    fa = np.linalg.norm(image.get_fdata()[..., :3], axis=-1).astype(np.float32)
    nib.save(nib.Nifti1Image(fa, image.affine), folder / f"{name}_FA.nii.gz")
    return peaks, folder / f"{name}_FA.nii.gz"


@pytest.fixture(scope="module")
def root(request, tract_small, endings_small, tmp_path_factory) -> Path:
    """An artifacts root as `python -m export` lays one out: <model name>/ per bundle (links to the cached ones)."""
    tom = export_bundle(request.config, "TOM", ["--weights-dir", str(weights_dir(request.config))], 16)
    folder = tmp_path_factory.mktemp("bundles")
    for name, bundle in (("tract_segmentation", tract_small), ("endings_segmentation", endings_small), ("TOM", tom)):
        (folder / name).symlink_to(Path(bundle).resolve())
    return folder


@pytest.fixture(scope="module")
def subject(tmp_path_factory) -> tuple[Path, Path]:
    return write_subject(tmp_path_factory.mktemp("subject"), "sub-01", 3)


def _nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(path)
    return np.asarray(image.dataobj), image.affine


def test_chain_equals_the_steps_one_by_one(root, subject, tmp_path, capsys):
    from runtime.run import main as run_main
    from runtime.tracking.__main__ import main as tracking_main
    from runtime.tractometry.__main__ import main as tractometry_main

    peaks, fa = subject
    chained, steps = tmp_path / "chain", tmp_path / "steps"
    done = run_module("runtime.chain", str(peaks), "-o", str(chained), "--scalar", str(fa), "--artifacts-root",
                      str(root), *TRACKING, "--quiet")  # the command line, in an interpreter that refuses JAX/torch
    assert done.returncode == 0, done.stderr
    for task in ("tract_segmentation", "endings_segmentation", "TOM"):
        assert run_main([str(peaks), "-o", str(steps), "--artifacts", str(root / task), "--output_type", task,
                         "--quiet"]) == 0
    assert tracking_main(["-i", str(peaks), "-o", str(steps), *TRACKING, "--quiet"]) == 0
    assert tractometry_main(["-i", str(steps / "TOM_trackings"), "-o", str(steps / "one_by_one.csv"), "-e",
                             str(steps / "endings_segmentations"), "-s", str(fa), "--tracking_format", "trk",
                             "--quiet"]) == 0
    names = [p.relative_to(chained).as_posix() for p in files_under(chained) if p.name != RECORD_NAME]
    untracked_toms = {f"TOM/{b}.nii.gz" for b in TRACTQUERIER_BUNDLES if b not in BUNDLES}
    assert names == sorted(p.relative_to(steps).as_posix().replace("one_by_one.csv", "Tractometry.csv")
                           for p in files_under(steps) if p.relative_to(steps).as_posix() not in untracked_toms)
    assert len([n for n in names if n.startswith("bundle_segmentations/")]) == 72
    assert len([n for n in names if n.startswith("endings_segmentations/")]) == 144
    # the chain writes the tracked bundles' TOMs only, running only the part model that holds them
    assert sorted(n for n in names if n.startswith("TOM/")) == sorted(f"TOM/{b}.nii.gz" for b in BUNDLES)
    assert sorted(n for n in names if n.startswith("TOM_trackings/") and n.endswith(".trk")) == sorted(
        f"TOM_trackings/{b}.trk" for b in BUNDLES)
    for name in names:  # the same code on the same input with the same seed: equal, not close
        if name.endswith(".nii.gz"):
            (a, affine_a), (b, affine_b) = _nifti(chained / name), _nifti(steps / name)
            np.testing.assert_array_equal(a, b, err_msg=name)
            np.testing.assert_array_equal(affine_a, affine_b)
        elif name.endswith(".trk"):
            assert (chained / name).read_bytes() == (steps / name).read_bytes(), name
        elif name.endswith(".json"):
            ours, theirs = (json.loads((d / name).read_text()) for d in (chained, steps))
            assert {**ours, "seconds": 0} == {**theirs, "seconds": 0}
    bundles, values = read_csv(chained / "Tractometry.csv")
    all_bundles, all_values = read_csv(steps / "one_by_one.csv")
    assert list(bundles) == PROFILED and all_bundles == TRACTOMETRY_BUNDLES
    np.testing.assert_array_equal(values, all_values[:, [all_bundles.index(b) for b in PROFILED]])
    assert values.shape == (98, 3) and (np.ptp(values, axis=0) > 0).sum() >= 2  # real profiles, not zeros


def _cohort(*args) -> int:
    from runtime.cohort.__main__ import main

    return main([str(a) for a in args])


def test_study_table_equals_the_subjects_csvs_and_rerun_resumes(root, tmp_path, capsys):
    study, out = tmp_path / "study", tmp_path / "out"
    for i in (1, 2):
        write_subject(study / f"sub-0{i}" / "dwi", f"sub-0{i}", 3 + i)
    args = (study, "-o", out, "--chain", "--scalar-pattern", "{subject}_FA.nii.gz", "--artifacts-root", root,
            *TRACKING, "--workers", "0", "--quiet")
    assert _cohort(*args) == 0, capsys.readouterr().err
    with open(out / "tractometry.csv", newline="") as stream:
        rows = list(csv.reader(stream))
    assert rows[0] == ["subject", "bundle", "point", "value"]
    expected = []
    for subject in ("sub-01", "sub-02"):
        bundles, values = read_csv(out / subject / "Tractometry.csv")
        assert list(bundles) == PROFILED
        expected += [(subject, b, p + 1, values[p, j]) for j, b in enumerate(bundles) for p in range(len(values))]
    assert [(s, b, int(p), float(v)) for s, b, p, v in rows[1:]] == expected  # float(repr(x)) == x: exact
    report = (out / "report.html").read_text()
    section = report.split('<table id="profiles">')[1]
    assert section.count('<tr class="profile') >= 2 and section.count('<svg class="profile"') >= 2
    before = {p: p.stat().st_mtime_ns for p in files_under(out / "sub-01")}
    capsys.readouterr()
    assert _cohort(*args[:-1]) == 0  # not quiet: the info line says what it did
    assert "2 done earlier, 0 to run" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in files_under(out / "sub-01")} == before
    from runtime.chain import ChainOptions
    from runtime.cohort.chain_subject import scalar_unchanged

    chain = ChainOptions(scalar_pattern="{subject}_FA.nii.gz")
    peaks, fa = (study / "sub-02" / "dwi" / f"sub-02_{x}.nii.gz" for x in ("peaks", "FA"))
    assert scalar_unchanged(str(out / "sub-02"), str(peaks), "sub-02", chain)
    os.utime(fa, ns=(fa.stat().st_atime_ns, fa.stat().st_mtime_ns + 10**9))  # a new FA map: a rerun redoes it
    assert not scalar_unchanged(str(out / "sub-02"), str(peaks), "sub-02", chain)
    assert _cohort(*args[:-1]) == 0
    assert "1 done earlier, 1 to run" in capsys.readouterr().out
    assert scalar_unchanged(str(out / "sub-02"), str(peaks), "sub-02", chain)  # redone: the record has the new map
    assert {p: p.stat().st_mtime_ns for p in files_under(out / "sub-01")} == before


def test_report_flags_a_far_profile(tmp_path):
    """Eight subjects' CSVs (real files, the chain's layout): one profile shifted far from the others is flagged,
    an all-zero profile (upstream's < 5 streamlines) counts as missing."""
    from runtime.cohort.report import write_study_report
    from runtime.tractometry.table import TractometryTable

    rng = np.random.default_rng(0)
    base = np.sin(np.linspace(0, 3, 98)) * 0.2 + 0.5
    rows = []
    for i in range(8):
        cst = base + rng.normal(0, 0.01, 98) + (0.3 if i == 5 else 0)
        af = np.zeros(98) if i == 2 else base + rng.normal(0, 0.01, 98)
        TractometryTable(("CST_left", "AF_left"), (cst, af), (cst, af)).write_csv(
            tmp_path / f"s{i}" / "Tractometry.csv")
        rows.append({"subject": f"s{i}", "status": "done"})
    write_study_report(tmp_path, rows)
    report = (tmp_path / "report.html").read_text()
    assert 'data-bundle="CST_left"><td>CST_left</td><td class="num">8</td>' in report
    assert 'data-bundle="AF_left"><td>AF_left</td><td class="num">7</td>' in report  # the zero profile left out
    flagged = report.split('<table id="profiles">')[1]
    assert flagged.count('<span class="outlier"') == 1
    assert '<span class="outlier" data-subject="s5" data-bundle="CST_left">' in flagged
    assert flagged.count('<polyline class="outlier"') == 1


@pytest.mark.parametrize("case, expect", [
    ("scalar of another grid", "grid (22, 26, 18) differs"),
    ("scalar missing", "scalar map not found"),
    ("4D scalar", "expected a 3D scalar map"),
    ("no TOM bundle", "no bundle for TOM at"),
    ("bundles Tractometry skips", "none of CA is profiled"),
    ("outputs exist", "CA.trk already exist(s); use --force"),
])
def test_bad_input_one_line_before_any_network(root, subject, tmp_path, capsys, no_network, case, expect):
    peaks, fa = subject
    out, bundles, extra = tmp_path / "out", root, []
    if case == "scalar of another grid":
        fa = tmp_path / "FA.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((22, 26, 18), np.float32), nib.load(peaks).affine), fa)
    elif case == "scalar missing":
        fa = tmp_path / "FA_missing.nii.gz"
    elif case == "4D scalar":
        fa = peaks
    elif case == "no TOM bundle":
        bundles = tmp_path / "bundles"
        bundles.mkdir()
        for name in ("tract_segmentation", "endings_segmentation"):
            (bundles / name).symlink_to((root / name).resolve())
    elif case == "bundles Tractometry skips":
        extra = ["--bundles", "CA"]
    elif case == "outputs exist":
        (out / "TOM_trackings").mkdir(parents=True)
        (out / "TOM_trackings" / "CA.trk").write_bytes(b"old")
    before = files_under(tmp_path)
    code = chain_main([str(peaks), "-o", str(out), "--scalar", str(fa), "--artifacts-root", str(bundles),
                       *TRACKING, *extra, "--quiet"])
    line = check_one_error(capsys.readouterr().err, expect, prefix="tractseg-aot-chain: error: ")
    assert code == 1, line
    assert files_under(tmp_path) == before


def test_cohort_subject_without_scalar_fails_alone_before_any_network(root, tmp_path, capsys, no_network):
    study = tmp_path / "study"
    write_subject(study / "sub-01" / "dwi", "sub-01", 1)
    (study / "sub-01" / "dwi" / "sub-01_FA.nii.gz").unlink()
    assert _cohort(study, "-o", tmp_path / "out", "--chain", "--scalar-pattern", "*_FA.nii.gz",
                   "--artifacts-root", root, *TRACKING, "--workers", "0", "--quiet") == 1
    with open(tmp_path / "out" / "cohort.csv", newline="") as stream:
        (row,) = list(csv.DictReader(stream))
    assert row["status"] == "failed" and "--scalar-pattern '*_FA.nii.gz' matches no file" in row["error"], row
    assert not (tmp_path / "out" / "sub-01").exists()


def test_a_rerun_resumes_and_redoes_only_what_changed(root, subject, tmp_path):
    """The same command again keeps every finished step; other tracking options redo tracking and tractometry
    only; a lost output redoes its step and those after it; --force redoes all."""
    peaks, fa = subject
    out = tmp_path / "chain"
    base = [str(peaks), "-o", str(out), "--scalar", str(fa), "--artifacts-root", str(root), "--quiet"]
    chain = lambda *extra: run_module("runtime.chain", *base, *extra)  # noqa: E731
    assert chain(*TRACKING).returncode == 0
    stamps = lambda: {p: p.stat().st_mtime_ns for p in files_under(out)}  # noqa: E731
    first = stamps()
    again = chain(*TRACKING)
    assert again.returncode == 0, again.stderr
    assert stamps() == first  # nothing rewritten: every step was done with the same inputs and options
    other = chain(*[("20" if arg == "30" else arg) for arg in TRACKING])  # --nr_fibers 20
    assert other.returncode == 0, other.stderr
    now = stamps()
    changed = {p.relative_to(out).parts[0] for p in now if now[p] != first.get(p)}
    assert changed == {"TOM_trackings", "Tractometry.csv", ".tractseg-aot-chain.json"}, changed
    (out / "Tractometry.csv").unlink()  # an interrupted tractometry: only that step runs again
    assert chain(*[("20" if arg == "30" else arg) for arg in TRACKING]).returncode == 0
    assert (out / "Tractometry.csv").is_file()
    assert all(p.stat().st_mtime_ns == now[p] for p in now if "bundle_segmentations" in p.parts)
    forced = chain(*TRACKING, "--force")
    assert forced.returncode == 0 and all(p.stat().st_mtime_ns != first[p] for p in first
                                          if p.suffix == ".gz" and "bundle_segmentations" in p.parts)
