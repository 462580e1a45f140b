"""One subject run for every caller (issue 16): the study runner runs subjects with the CLI module (runtime.run)
blocked from import; argparse stops at the command-line modules; the API refuses odd inputs in one line and warns
about oblique axes the same way for a path, a nibabel image and an array."""
from __future__ import annotations

import ast
import logging
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from runtime.errors import InputError
from runtime.io.peaks_input import read_peaks
from runtime.options import BackendOptions, QCOptions, RunOptions, SaveOptions
from tests.run_support import LAS, REPO, save_peaks, synthetic_peaks

BLOCK_RUN = """
import runpy, sys
class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name == "runtime.run":
            raise ImportError("runtime.run is the CLI module: the study runner must not need it")
        return None
sys.meta_path.insert(0, _Blocker())
sys.argv = ["runtime.cohort"] + sys.argv[1:]
runpy.run_module("runtime.cohort", run_name="__main__")
"""
CLI_MODULES = {"run.py", "__main__.py"}  # where a command line may parse its arguments, beside runtime/cli/
DESCRIBES_A_PARSER = {"runtime/bids/boutiques.py"}  # the BIDS App's Boutiques descriptor, read off its parser


def test_the_study_runner_runs_without_the_cli_module(tract_small, tmp_path):
    save_peaks(tmp_path / "study" / "sub-01" / "peaks.nii.gz", synthetic_peaks((16, 18, 15)))
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", BLOCK_RUN, str(tmp_path / "study"), "-o", str(out), "--artifacts",
                           str(tract_small), "--workers", "0", "--quiet"], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert len(list((out / "sub-01" / "bundle_segmentations").iterdir())) == 72


def test_argparse_stops_at_the_command_lines():
    offenders = []
    for path in sorted((REPO / "runtime").rglob("*.py")):
        tree = ast.parse(path.read_text())
        names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        described = str(path.relative_to(REPO)) in DESCRIBES_A_PARSER
        if "argparse" in names and path.name not in CLI_MODULES and path.parent.name != "cli" and not described:
            offenders.append(str(path.relative_to(REPO)))
    assert not offenders, f"argparse below the command line in {offenders}"


def test_run_options_refuse_what_upstream_refuses():
    with pytest.raises(ValueError, match="no upstream model"):
        RunOptions(output_type="endings_segmentation", tract_definition="xtract")
    with pytest.raises(ValueError, match="threads"):
        BackendOptions(threads=0)
    with pytest.raises(ValueError, match="--statistics / --preview are for mask outputs"):
        RunOptions(output_type="TOM", qc=QCOptions(preview=True))
    options = RunOptions(save=SaveOptions(single_file=True), qc=QCOptions(statistics=True))
    assert [p.name for p in options.output_files("o")] == ["bundle_segmentations.nii.gz", "statistics.json"]
    assert len(options.other_layout_files("o")) == 72


def test_array_input_with_a_bad_affine_is_one_line():
    data = synthetic_peaks((8, 9, 7))
    with pytest.raises(InputError, match="the affine must be a 4x4 array of numbers, not str 'identity'"):
        read_peaks((data, "identity"))


def oblique_affine() -> np.ndarray:
    c, s = np.cos(np.radians(10)), np.sin(np.radians(10))
    affine = LAS.copy()
    affine[:3, :3] = affine[:3, :3] @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    return affine


def test_oblique_warning_is_the_same_for_every_input_kind(tmp_path, caplog):
    data = synthetic_peaks((8, 9, 7))
    path = tmp_path / "peaks.nii.gz"
    nib.save(nib.Nifti1Image(data, oblique_affine()), path)
    messages = []
    for given, name in ((str(path), str(path)), (nib.load(path), str(path)), ((data, oblique_affine()), "<array>")):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="tractseg_aot"):
            read_peaks(given, 16, 72)
        warned = [r.getMessage() for r in caplog.records if "oblique" in r.getMessage()]
        assert len(warned) == 1, (name, caplog.records)
        messages.append(warned[0].replace(name, "NAME"))
    assert len(set(messages)) == 1, messages


def test_api_segment_writes_what_the_cli_writes(tract_small, tmp_path):
    from runtime import TractSegPipeline
    from runtime.run import main

    peaks = save_peaks(tmp_path / "peaks.nii.gz", synthetic_peaks((16, 18, 15)))
    assert main([str(peaks), "-o", str(tmp_path / "cli"), "--artifacts", str(tract_small), "--quiet",
                 "--statistics", "--backend", "onnxruntime"]) == 0
    pipeline = TractSegPipeline.open(tract_small, backend="onnxruntime")
    report = pipeline.segment(peaks, tmp_path / "api", RunOptions(
        artifacts=str(tract_small), qc=QCOptions(statistics=True), backend=BackendOptions(backend="onnxruntime"),
        quiet=True))
    cli_files = sorted(p.relative_to(tmp_path / "cli") for p in (tmp_path / "cli").rglob("*") if p.is_file())
    api_files = sorted(p.relative_to(tmp_path / "api") for p in report.outputs)
    assert [p for p in cli_files if not p.name.startswith(".")] == api_files
    for rel in api_files:
        if rel.suffix == ".gz":
            a, b = nib.load(tmp_path / "cli" / rel), nib.load(tmp_path / "api" / rel)
            assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj)) and a.get_data_dtype() == b.get_data_dtype()
    assert (tmp_path / "cli" / "statistics.json").read_text() == (tmp_path / "api" / "statistics.json").read_text()
    assert Path(report.document["outputs"][0]).is_file() and report.slices_run and report.peak_rss_mb > 0


def test_a_file_size_limit_is_one_line_like_a_full_disk(tract_small, tmp_path):
    """Under ``ulimit -f`` a write fails with EFBIG (Python ignores SIGXFSZ): exit 1, one line, nothing written."""
    import resource

    peaks = save_peaks(tmp_path / "peaks.nii.gz", synthetic_peaks((16, 18, 15)))
    out = tmp_path / "out"
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))  # noqa: E731 (bytes)
    done = subprocess.run([sys.executable, "-m", "runtime.run", str(peaks), "-o", str(out), "--artifacts",
                           str(tract_small), "--quiet", "--get_probabilities"], cwd=REPO, capture_output=True,
                          text=True, timeout=600, preexec_fn=limit)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("tractseg-aot: error:")]
    assert len(errors) == 1 and "file-size limit" in errors[0] and "Traceback" not in done.stderr, done.stderr
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]
