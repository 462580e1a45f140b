"""``runtime.run DWI --raw_diffusion_input`` (issue 19): a simulated DWI (benchmarks/diffusion_phantom.py, real
NIfTI + FSL bvals/bvecs) through each peak engine and the S=16 bundle: the masks equal those of a run on the peaks
file the run kept, and bad inputs are one line, exit 1, nothing written."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from benchmarks.diffusion_phantom import simulate
from runtime.cohort.records import DONE_NAME
from runtime.run import main
from tests.run_support import save_peaks, synthetic_peaks

ENGINES = [pytest.param("dipy", id="dipy"),
           pytest.param("mrtrix", id="mrtrix", marks=pytest.mark.skipif(
               shutil.which("dwi2fod") is None, reason="MRtrix (dwi2fod) is not on PATH"))]


@pytest.fixture(scope="module")
def dwi(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("dwi"), shape=(16, 18, 14), n_dirs=32, n_b0=3, snr=30.0, seed=0,
                    ellipsoid=True)


def masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(nib.load(p).dataobj) for p in sorted((folder / "bundle_segmentations").iterdir())}


@pytest.mark.parametrize("engine", ENGINES)
def test_raw_input_equals_a_run_on_its_peaks(engine, dwi, tract_small, tmp_path, capsys, monkeypatch):
    """With a relative output folder, as the README's own example runs it (the mrtrix engine once read it
    twice from inside its staging folder)."""
    if engine == "dipy":
        pytest.importorskip("dipy", reason="the [diffusion] extra (dipy) is not installed")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    code = main([str(dwi.dwi), "-o", "out", "--artifacts", str(tract_small), "--raw_diffusion_input",
                 "--bvals", str(dwi.bvals), "--bvecs", str(dwi.bvecs), "--brain_mask", str(dwi.mask),
                 "--peaks-engine", engine, "--nr_cpus", "2", "--quiet"])
    assert code == 0, capsys.readouterr().err
    peaks = nib.load(out / "peaks.nii.gz")
    assert peaks.shape == (*dwi.n_fibres.shape, 9)
    assert not [p for p in out.iterdir() if p.name.startswith(".tractseg-aot-peaks")]  # the work folder is gone
    again = tmp_path / "again"
    assert main([str(out / "peaks.nii.gz"), "-o", str(again), "--artifacts", str(tract_small), "--quiet"]) == 0
    ours, reference = masks(out), masks(again)
    assert len(ours) == 72 and ours.keys() == reference.keys()
    assert all(np.array_equal(ours[k], reference[k]) for k in ours)


def refused(capsys, argv, *needles) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("tractseg-aot: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_bad_raw_inputs_are_one_line_and_write_nothing(dwi, tract_small, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["-o", str(out), "--artifacts", str(tract_small), "--quiet"]
    peaks = save_peaks(tmp_path / "peaks.nii.gz", synthetic_peaks((12, 14, 11)))
    refused(capsys, [str(peaks), *base, "--raw_diffusion_input", "--bvals", str(dwi.bvals), "--bvecs",
                     str(dwi.bvecs)], "bvals for a DWI with 9 volumes")  # a peaks file is no DWI
    refused(capsys, [str(dwi.dwi), *base], "--raw_diffusion_input")  # a DWI given as peaks
    short = tmp_path / "short.bvals"
    short.write_text(" ".join(dwi.bvals.read_text().split()[:-1]) + "\n")
    refused(capsys, [str(dwi.dwi), *base, "--raw_diffusion_input", "--bvals", str(short), "--bvecs",
                     str(dwi.bvecs), "--brain_mask", str(dwi.mask)], str(short))
    refused(capsys, [str(dwi.dwi), *base, "--raw_diffusion_input", "--bvals", str(tmp_path / "missing.bvals"),
                     "--bvecs", str(dwi.bvecs)], "missing.bvals")
    if importlib.util.find_spec("dipy") is not None:  # the dipy engine reads the data itself
        truncated = tmp_path / "truncated.nii.gz"
        whole = dwi.dwi.read_bytes()
        truncated.write_bytes(whole[: len(whole) // 2])
        refused(capsys, [str(truncated), *base, "--raw_diffusion_input", "--bvals", str(dwi.bvals), "--bvecs",
                         str(dwi.bvecs), "--brain_mask", str(dwi.mask), "--peaks-engine", "dipy"],
                str(truncated), "file truncated or corrupt")
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tractseg-aot-peaks")]


def test_nan_voxels_are_left_out_by_the_dipy_engine(dwi, tract_small, tmp_path, capsys):
    """NaN voxels in a DWI: the mrtrix engine takes the file; so does dipy's, leaving them out with a warning."""
    pytest.importorskip("dipy", reason="the [diffusion] extra (dipy) is not installed")
    image = nib.load(dwi.dwi)
    data = image.get_fdata(dtype=np.float32)
    data[6:8, 6:8, 6:8, :] = np.nan
    nan_dwi = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data, image.affine), nan_dwi)
    code = main([str(nan_dwi), "-o", str(tmp_path / "out"), "--artifacts", str(tract_small), "--quiet",
                 "--raw_diffusion_input", "--bvals", str(dwi.bvals), "--bvecs", str(dwi.bvecs), "--peaks-engine",
                 "dipy"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "8 voxel(s) hold NaN or inf values" in err and len(masks(tmp_path / "out")) == 72


def test_study_runner_takes_raw_inputs(dwi, tract_small, tmp_path):
    pytest.importorskip("dipy", reason="the [diffusion] extra (dipy) is not installed")
    from tests.test_cohort import cohort, table

    out = tmp_path / "out"
    done = cohort(dwi.dwi.parent, "-o", out, "--pattern", "**/Diffusion.nii.gz", "--artifacts", tract_small,
                  "--workers", "0", "--quiet", "--raw_diffusion_input", "--peaks-engine", "dipy", "--nr_cpus", "2")
    assert done.returncode == 0, done.stderr
    rows = table(out)
    assert list(rows) == ["Diffusion"] and rows["Diffusion"]["status"] == "done"
    assert (out / "Diffusion" / "peaks.nii.gz").is_file() and len(masks(out / "Diffusion")) == 72
    assert rows["Diffusion"]["peaks"] == str(out / "Diffusion" / "peaks.nii.gz")  # the peaks made, not the DWI
    record = json.loads((out / "Diffusion" / DONE_NAME).read_text())
    assert record["options"]["raw_diffusion_input"]["peaks_engine"] == "dipy" and "peaks" in record["timings_s"]
    # a resume never reuses outputs made with other peak settings: each one changed in turn redoes the subject
    base = (dwi.dwi.parent, "-o", out, "--pattern", "**/Diffusion.nii.gz", "--artifacts", tract_small, "--workers",
            "0", "--raw_diffusion_input", "--nr_cpus", "2")
    for changed in (("--peaks-engine", "auto"), ("--peaks-engine", "auto", "--keep_intermediate_files")):
        again = cohort(*base, *changed)
        assert again.returncode == 0 and "0 done earlier, 1 to run" in again.stdout, again.stdout + again.stderr
    same = cohort(*base, "--peaks-engine", "auto", "--keep_intermediate_files")
    assert same.returncode == 0 and "1 done earlier, 0 to run" in same.stdout, same.stdout + same.stderr


def test_bids_app_participant_and_group(dwi, tract_small, tmp_path):
    """A one-participant BIDS dataset made from the phantom: participant level writes BIDS-named masks equal to
    the study runner's files and resumes; group level writes the study report."""
    pytest.importorskip("dipy", reason="the [diffusion] extra (dipy) is not installed")
    import subprocess
    import sys

    from runtime.cohort.records import read_cohort_table
    from tests.run_support import REPO

    bids = tmp_path / "bids"
    folder = bids / "sub-01" / "dwi"
    folder.mkdir(parents=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "phantom", "BIDSVersion": "1.10.0"}))
    shutil.copy(dwi.dwi, folder / "sub-01_dwi.nii.gz")
    shutil.copy(dwi.bvals, folder / "sub-01_dwi.bval")
    shutil.copy(dwi.bvecs, folder / "sub-01_dwi.bvec")
    broken = bids / "sub-02" / "dwi"  # a series without .bval: it fails alone, the other one runs
    broken.mkdir(parents=True)
    shutil.copy(dwi.dwi, broken / "sub-02_dwi.nii.gz")
    shutil.copy(dwi.bvecs, broken / "sub-02_dwi.bvec")
    out = tmp_path / "derivatives"
    argv = [sys.executable, "-m", "runtime.bids", str(bids), str(out), "participant", "--artifacts", str(tract_small),
            "--peaks-engine", "dipy", "--workers", "0", "--nr_cpus", "2", "--statistics"]
    first = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert first.returncode == 1, first.stderr
    rows = {row["subject"]: row for row in read_cohort_table(out / "tractseg_output" / "cohort.csv")}
    assert rows["sub-01"]["status"] == "done" and rows["sub-02"]["status"] == "failed"
    assert "sub-02_dwi.nii.gz: no .bval file" in rows["sub-02"]["error"]
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "tractseg-aot"
    assert "peaks computed by the dipy engine" in description["GeneratedBy"][0]["Description"]
    assert (out / ".bidsignore").read_text() == "tractseg_output/\n"
    sidecar = json.loads((out / "sub-01" / "dwi" / "sub-01_space-orig_label-CSTleft_mask.json").read_text())
    assert sidecar["Sources"] == ["bids:raw:sub-01/dwi/sub-01_dwi.nii.gz"] and sidecar["Bundle"] == "CST_left"
    bids_mask = out / "sub-01" / "dwi" / "sub-01_space-orig_label-CSTleft_mask.nii.gz"
    ours = out / "tractseg_output" / "sub-01" / "bundle_segmentations" / "CST_left.nii.gz"
    assert np.array_equal(np.asarray(nib.load(bids_mask).dataobj), np.asarray(nib.load(ours).dataobj))
    assert len(list((out / "sub-01" / "dwi").glob("*_mask.nii.gz"))) == 72
    bids_peaks = out / "sub-01" / "dwi" / "sub-01_space-orig_model-csd_param-peaks_dwimap.nii.gz"  # BEP016
    assert bids_peaks.samefile(out / "tractseg_output" / "sub-01" / "peaks.nii.gz")
    peaks_sidecar = json.loads(bids_peaks.with_name(bids_peaks.name.replace(".nii.gz", ".json")).read_text())
    assert peaks_sidecar["Model"]["Parameters"] == {"CSDType": "csd", "PeaksEngine": "dipy"}
    assert peaks_sidecar["OrientationEncoding"] == {"Type": "3vector", "EncodingAxis": 3, "Reference": "xyz",
                                                    "AntipodalSymmetry": True}
    again = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 1 and "1 done earlier, 1 to run" in again.stdout, again.stdout + again.stderr
    group = subprocess.run([sys.executable, "-m", "runtime.bids", str(bids), str(out), "group"], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert group.returncode == 1, group.stderr  # the report is written; a failed series is the exit status
    assert (out / "tractseg_output" / "report.html").is_file()


def test_bids_app_chain_tracks_and_profiles(dwi, tract_small, endings_small, request, tmp_path):
    """``--chain --scalar-param fa``: the raw-DWI pass, then the chain on its peaks; BEP046 tractograms (TRX, the
    chain's own files) and the tractometry CSV under BIDS names, every name in the proposals' entity order; a series
    without its FA map fails its chain alone (its masks and peaks are still linked); a rerun redoes nothing; the
    group level writes the chain's study table."""
    pytest.importorskip("dipy", reason="the [tracking] extra (dipy) is not installed")
    pytest.importorskip("trx", reason="the [tracking] extra (trx-python) is not installed")
    import subprocess
    import sys

    from runtime.bids.app import run_group
    from runtime.cohort.records import read_cohort_table
    from runtime.tracking.trx_format import read_trx
    from tests.run_support import REPO
    from tests.test_bids import check_name
    from tests.tom_support import export_bundle, weights_dir

    tom = export_bundle(request.config, "TOM", ["--weights-dir", str(weights_dir(request.config))], 16)
    root = tmp_path / "bundles"
    root.mkdir()
    for name, bundle in (("tract_segmentation", tract_small), ("endings_segmentation", endings_small), ("TOM", tom)):
        (root / name).symlink_to(Path(bundle).resolve())
    bids = tmp_path / "bids"
    (bids / "sub-01").mkdir(parents=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "phantom", "BIDSVersion": "1.10.0"}))
    for series in ("sub-01/ses-1/dwi/sub-01_ses-1", "sub-02/dwi/sub-02"):  # sub-02 has no FA map
        (bids / series).parent.mkdir(parents=True, exist_ok=True)
        for source, extension in ((dwi.dwi, "_dwi.nii.gz"), (dwi.bvals, "_dwi.bval"), (dwi.bvecs, "_dwi.bvec")):
            shutil.copy(source, bids / f"{series}{extension}")
    fa = bids / "derivatives" / "dti" / "sub-01" / "ses-1" / "dwi" / "sub-01_ses-1_model-tensor_param-fa_dwimap.nii.gz"
    fa.parent.mkdir(parents=True)
    image = nib.load(dwi.dwi)
    nib.save(nib.Nifti1Image(np.where(np.asarray(nib.load(dwi.mask).dataobj) > 0, 0.5, 0).astype(np.float32),
                             image.affine), fa)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "runtime.bids", str(bids), str(out), "participant", "--chain", "--scalar-param",
            "fa", "--artifacts-root", str(root), "--bundles", "CST_left,CC_1", "--nr_fibers", "20", "--peaks-engine",
            "dipy", "--workers", "0", "--nr_cpus", "2", "--quiet"]
    first = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert first.returncode == 1, first.stderr
    segmented = {row["subject"]: row["status"] for row in read_cohort_table(out / "tractseg_output" / "cohort.csv")}
    tracked = {row["subject"]: row for row in read_cohort_table(out / "tractseg_chain" / "cohort.csv")}
    assert segmented == {"sub-01_ses-1": "done", "sub-02": "done"}
    assert tracked["sub-01_ses-1"]["status"] == "done" and tracked["sub-02"]["status"] == "failed"
    assert "no scalar map sub-02[_space-orig]_model-<model>_param-fa_dwimap" in tracked["sub-02"]["error"]
    assert (out / "sub-02" / "dwi" / "sub-02_space-orig_model-csd_param-peaks_dwimap.nii.gz").is_file()
    assert not list((out / "sub-02" / "dwi").glob("*_tractogram.trx"))
    folder, chain = out / "sub-01" / "ses-1" / "dwi", out / "tractseg_chain" / "sub-01_ses-1"
    written = sorted(p.name for p in (out / "sub-01").rglob("*") if p.is_file())
    assert len(written) == 2 * (72 + 144 + 1 + 2 + 1)  # masks, endings, peaks, 2 tractograms, the CSV; + sidecars
    for name in written + sorted(p.name for p in (out / "sub-02").rglob("*") if p.is_file()):
        check_name(name)
    for bundle, name in (("CST_left", "sub-01_ses-1_space-orig_tract-CST_hemi-L_track-tractseg_tractogram"),
                         ("CC_1", "sub-01_ses-1_space-orig_tract-CC1_track-tractseg_tractogram")):
        tractogram = folder / f"{name}.trx"
        assert tractogram.samefile(chain / "TOM_trackings" / f"{bundle}.trx")
        streamlines, _ = read_trx(tractogram)
        sidecar = json.loads((folder / f"{name}.json").read_text())
        for key in ("StreamlineSeeding", "StreamlinePropagation", "StreamlineTermination",
                    "StreamlineAcceptanceCriteria"):
            assert key in sidecar, key  # BEP046's REQUIRED fields
        assert sidecar["TractsegAot"]["streamlines"] == len(streamlines) and sidecar["TractsegAot"]["seed"] == 0
        assert sidecar["StreamlineSeeding"]["Sources"][0]["Source"] == (
            f"bids::tractseg_chain/sub-01_ses-1/bundle_segmentations/{bundle}.nii.gz")
    csv = folder / "sub-01_ses-1_space-orig_model-tensor_param-fa_track-tractseg_tractometry.csv"
    assert csv.samefile(chain / "Tractometry.csv") and csv.read_text().splitlines()[0] == "CC_1;CST_left"
    assert json.loads(csv.with_suffix(".json").read_text())["Sources"][1] == (
        "bids:raw:derivatives/dti/sub-01/ses-1/dwi/sub-01_ses-1_model-tensor_param-fa_dwimap.nii.gz")
    assert (folder / "sub-01_ses-1_space-orig_label-CSTleft_desc-endings_mask.nii.gz").is_file()
    description = json.loads((out / "dataset_description.json").read_text())["GeneratedBy"][0]["Description"]
    assert "_track-tractseg_tractogram.trx" in description and "_track-tractseg_tractometry.csv" in description
    assert (out / ".bidsignore").read_text() == "tractseg_output/\ntractseg_chain/\n"
    again = subprocess.run(argv[:-1], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 1 and again.stdout.count("1 done earlier, 1 to run") == 1, again.stdout
    assert "2 subject(s): 2 done earlier, 0 to run" in again.stdout, again.stdout
    assert run_group(out) == 1 and (out / "tractseg_chain" / "tractometry.csv").is_file()
