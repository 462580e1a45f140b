"""``--uncertainty`` and ``--single_orientation`` end to end on small real bundles (S=16): the command line, the
API and the study runner. Their agreement with upstream's own code is in tests/test_upstream_flags.py."""
from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from runtime.models.bundles import TRACTQUERIER_BUNDLES
from runtime.options import InferenceOptions, RunOptions, SaveOptions, UncertaintyOptions
from runtime.pipeline import TractSegPipeline
from runtime.run import main
from tests.run_support import REPO, SMALL_SIZE, files_under, read, save_peaks, synthetic_peaks


@pytest.fixture()
def peaks(tmp_path):
    return save_peaks(tmp_path / "subject" / "peaks.nii.gz", synthetic_peaks((20, 23, 18), seed=2))


def cli(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def maps(folder) -> np.ndarray:
    return np.stack([read(folder / "bundle_uncertainties" / f"{b}.nii.gz")[0] for b in TRACTQUERIER_BUNDLES])


def test_uncertainty_maps_in_upstreams_layout_reproducible_by_seed(tract_small, peaks, tmp_path, capsys):
    common = ["--artifacts", tract_small, "--quiet", "--uncertainty"]
    code, err = cli(capsys, peaks, "-o", tmp_path / "a", *common, "--report", tmp_path / "a.json")
    assert code == 0, err
    names = [p.relative_to(tmp_path / "a").as_posix() for p in files_under(tmp_path / "a")]
    assert names == sorted(f"bundle_uncertainties/{b}.nii.gz" for b in TRACTQUERIER_BUNDLES)
    first = maps(tmp_path / "a")
    image = nib.load(tmp_path / "a" / "bundle_uncertainties" / "CST_left.nii.gz")
    assert image.get_data_dtype() == np.float32 and image.shape == (20, 23, 18)
    assert first.min() >= 0 and first.max() <= 0.5 and (first > 0).mean() > 0.1  # std of values in [0, 1]
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["request"]["uncertainty"] == {"samples": 30, "seed": 0}
    assert report["self_check"]["dropout_model"]["max_abs"] <= report["self_check"]["dropout_model"]["limit"]
    assert report["dropout_artifact"]["artifact_id"] == "onnx-dropout" and report["output_dtype"] == "float32"

    assert cli(capsys, peaks, "-o", tmp_path / "b", *common, "--single_output_file")[0] == 0
    single, _ = read(tmp_path / "b" / "bundle_uncertainties.nii.gz")  # the same seed: the same maps, in one file
    assert single.shape == (20, 23, 18, 72)
    np.testing.assert_array_equal(np.moveaxis(single, -1, 0), first)

    seg = TractSegPipeline.open(tract_small).predict(peaks, inference=InferenceOptions(
        uncertainty=UncertaintyOptions(seed=1)))  # the API; another seed, other maps
    assert not np.array_equal(seg.probability("CST_left"), first[TRACTQUERIER_BUNDLES.index("CST_left")])
    with pytest.raises(ValueError, match="uncertainty maps"):
        seg.mask("CST_left")


@pytest.mark.parametrize("extra, message", [
    (("--output_type", "endings_segmentation"), "--uncertainty is for --output_type tract_segmentation"),
    (("--statistics",), "--statistics / --preview describe masks"),
])
def test_uncertainty_refusals_are_one_line(tract_small, peaks, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        main([str(peaks), "-o", str(tmp_path / "x"), "--artifacts", tract_small, "--uncertainty", *extra])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_single_orientation_runs_one_direction(tract_small, endings_small, peaks, tmp_path, capsys):
    code, err = cli(capsys, peaks, "-o", tmp_path / "t", "--artifacts", tract_small, "--quiet",
                    "--single_orientation", "--report", tmp_path / "t.json")
    assert code == 0, err
    report = json.loads((tmp_path / "t.json").read_text())
    assert report["slices"]["slices"] == SMALL_SIZE and report["request"]["single_orientation"] is True
    assert nib.load(tmp_path / "t" / "bundle_segmentations" / "CST_left.nii.gz").get_data_dtype() == np.int32
    code, err = cli(capsys, peaks, "-o", tmp_path / "e", "--artifacts", endings_small, "--quiet",
                    "--output_type", "endings_segmentation", "--single_orientation")
    assert code == 0, err
    ending, image = read(tmp_path / "e" / "endings_segmentations" / "CST_left_b.nii.gz")
    assert image.get_data_dtype() == np.float32 and set(np.unique(ending)) <= {0.0, 1.0}  # upstream's float 0/1


def test_study_runner_passes_uncertainty_on(tract_small, tmp_path):
    pytest.importorskip("distributed", reason="the [cohort] extra (Dask) is not installed")
    save_peaks(tmp_path / "study" / "sub-01" / "peaks.nii.gz", synthetic_peaks((20, 23, 18), seed=2))
    done = subprocess.run([sys.executable, "-m", "runtime.cohort", str(tmp_path / "study"), "-o", str(tmp_path / "out"),
                           "--artifacts", tract_small, "--workers", "0", "--quiet", "--uncertainty",
                           "--pattern", "*/peaks.nii.gz"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(list((tmp_path / "out" / "sub-01" / "bundle_uncertainties").glob("*.nii.gz"))) == 72


def test_upstreams_folder_names_verbose_and_testing_flags(tract_small, peaks, tmp_path, capsys):
    code = main([str(peaks), "-o", str(tmp_path / "a"), "--artifacts", tract_small, "--verbose",
                 "--tract_segmentation_output_dir", "segs"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["segs"]
    assert len(list((tmp_path / "a" / "segs").glob("*.nii.gz"))) == 72
    assert '"tract_segmentation_output_dir": "segs"' in out and "timings (s): open_backend" in out
    tom = RunOptions(output_type="TOM", save=SaveOptions(tom_dir="tom_maps")).output_files(tmp_path / "t")
    assert {p.parent.name for p in tom} == {"tom_maps"} and len(tom) == 72
    for bad in (["--tract_segmentation_output_dir", "../up"], ["--test"], ["--exp_name", "x"], ["--verbose", "--quiet"]):
        with pytest.raises(SystemExit) as exit_info:
            main([str(peaks), "-o", str(tmp_path / "b"), "--artifacts", tract_small, *bad])
        assert exit_info.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()[-1]) > 0
    assert not (tmp_path / "b").exists()
