"""The study runner as a hostile new user meets it (issue 16's findings), each on a real small bundle (S=16) and
real NIfTI studies: a one-line error with exit 1 and nothing started, or the right behaviour. Most run with
``--workers 0`` (no Dask); the interrupt test runs a real embedded Dask cluster."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.cohort.records import DONE_NAME
from tests.run_support import REPO, save_peaks, synthetic_peaks
from tests.test_cohort import cohort, table

SMALL = (20, 24, 19)


def one_line_error(done: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 1, one error line naming what is wrong, no traceback."""
    assert done.returncode == 1, (done.returncode, done.stderr)
    errors = [line for line in done.stderr.splitlines() if line.startswith("tractseg-aot: error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def study_of(root: Path, n: int) -> list[str]:
    ids = []
    for i in range(n):
        sid = f"sub-{i + 1:02d}"
        save_peaks(root / sid / "dwi" / f"{sid}_peaks.nii.gz", synthetic_peaks(SMALL, seed=i))
        ids.append(sid)
    return ids


@pytest.mark.parametrize("name", ["cohort.csv", "report.html"])
def test_study_files_taken_by_a_directory(tract_small, tmp_path, name):
    study_of(tmp_path / "study", 1)
    out = tmp_path / "out"
    (out / name).mkdir(parents=True)
    done = cohort(tmp_path / "study", "-o", out, "--artifacts", tract_small, "--workers", "0", "--quiet")
    one_line_error(done, str(out / name), "is a directory")
    assert not (out / "sub-01").exists()


def test_subject_id_that_is_the_tables_name(tract_small, tmp_path):
    save_peaks(tmp_path / "study" / "cohort.csv" / "peaks.nii.gz", synthetic_peaks(SMALL))
    out = tmp_path / "out"
    done = cohort(tmp_path / "study", "-o", out, "--artifacts", tract_small, "--workers", "0", "--quiet")
    one_line_error(done, "'cohort.csv'", "--list")
    assert not (out / "cohort.csv").exists()


def test_bogus_scheduler_is_one_line_and_leaves_no_table(tract_small, tmp_path):
    study_of(tmp_path / "study", 1)
    out = tmp_path / "out"
    done = cohort(tmp_path / "study", "-o", out, "--artifacts", tract_small, "--scheduler", "bogus", "--quiet",
                  timeout=120)
    one_line_error(done, "bogus")
    assert not (out / "cohort.csv").exists()


def test_hand_edited_statistics_do_not_break_the_report(tract_small, tmp_path):
    ids = study_of(tmp_path / "study", 3)
    out = tmp_path / "out"
    args = (tmp_path / "study", "-o", out, "--artifacts", tract_small, "--workers", "0", "--quiet", "--statistics")
    assert cohort(*args).returncode == 0
    first = json.loads((out / ids[0] / "statistics.json").read_text())
    bundle = next(k for k in first if k != "_meta")
    for sid in ids[:2]:  # every usable volume of that bundle becomes Infinity: nothing left to plot for it
        path = out / sid / "statistics.json"
        document = json.loads(path.read_text())
        document[bundle] = {key: float("inf") for key in document[bundle]}
        path.write_text(json.dumps(document))  # Python writes Infinity, as a hand edit might
        assert "Infinity" in path.read_text()
    third = out / ids[2] / "statistics.json"
    third.write_text(third.read_text()[:100])  # truncated
    again = cohort(*args)
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr and (out / "report.html").stat().st_size > 0


def test_linked_subject_folders_and_dangling_links(tract_small, tmp_path):
    ids = study_of(tmp_path / "elsewhere", 2)
    study = tmp_path / "study"
    study.mkdir()
    os.symlink(tmp_path / "elsewhere" / ids[0], study / ids[0])  # a linked subject folder
    (study / "sub-03" / "dwi").mkdir(parents=True)
    os.symlink(tmp_path / "annex" / "missing", study / "sub-03" / "dwi" / "sub-03_peaks.nii.gz")  # before `get`
    out = tmp_path / "out"
    done = cohort(study, "-o", out, "--artifacts", tract_small, "--workers", "0", "--quiet")
    assert done.returncode == 1, done.stderr
    rows = table(out)
    assert sorted(rows) == [ids[0], "sub-03"]
    assert rows[ids[0]]["status"] == "done"
    assert rows["sub-03"]["status"] == "failed" and "broken symbolic link" in rows["sub-03"]["error"]
    assert "1 done, 1 failed" in done.stderr  # the closing line, also under --quiet when something failed


def test_resume_notices_a_list_that_now_names_another_file(tract_small, tmp_path):
    study_of(tmp_path / "a", 1)
    a = tmp_path / "a" / "sub-01" / "dwi" / "sub-01_peaks.nii.gz"
    b = tmp_path / "b" / "peaks.nii.gz"
    b.parent.mkdir()
    out = tmp_path / "out"
    listing = tmp_path / "list.csv"
    listing.write_text(f"subject,peaks\nsub-01,{a}\n")
    assert cohort("--list", listing, "-o", out, "--artifacts", tract_small, "--workers", "0", "--quiet"
                  ).returncode == 0
    shutil.copy2(a, b)  # cp -p: same size and mtime, another file
    listing.write_text(f"subject,peaks\nsub-01,{b}\n")
    again = cohort("--list", listing, "-o", out, "--artifacts", tract_small, "--workers", "0")
    assert again.returncode == 0, again.stderr
    assert "0 done earlier, 1 to run" in again.stdout
    assert json.loads((out / "sub-01" / DONE_NAME).read_text())["input"]["path"] == str(b)


def test_output_root_inside_the_study_with_a_broad_pattern(tract_small, tmp_path):
    study = tmp_path / "study"
    ids = study_of(study, 2)
    out = study / "derivatives" / "tractseg"
    args = (study, "-o", out, "--pattern", "**/*.nii.gz", "--artifacts", tract_small, "--workers", "0")
    first = cohort(*args)
    assert first.returncode == 0, first.stderr
    again = cohort(*args)
    assert again.returncode == 0, again.stderr
    assert sorted(table(out)) == ids and "2 done earlier, 0 to run" in again.stdout


def test_workers_0_says_how_it_ended_and_passes_warnings_on(tract_small, tmp_path):
    import nibabel as nib
    import numpy as np

    study = tmp_path / "study"
    study_of(study, 1)
    oblique = np.diag([2.0, 2.0, 2.0, 1.0])
    c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
    oblique[:3, :3] = oblique[:3, :3] @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    path = study / "sub-02" / "dwi" / "sub-02_peaks.nii.gz"
    path.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(synthetic_peaks(SMALL, seed=3), oblique), path)
    out = tmp_path / "out"
    done = cohort(study, "-o", out, "--artifacts", tract_small, "--workers", "0")
    assert done.returncode == 0, done.stderr
    assert "2 done, 0 failed" in done.stdout
    assert "warning: sub-02:" in done.stderr and "oblique" in done.stderr
    assert "oblique" in table(out)["sub-02"]["warnings"]


def test_a_second_study_on_the_same_output_root_is_refused(tract_small, tmp_path):
    study_of(tmp_path / "study", 3)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "runtime.cohort", str(tmp_path / "study"), "-o", str(out), "--artifacts",
            str(tract_small), "--workers", "0", "--quiet"]
    first = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / ".tractseg-aot-part-0-of-1.lock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        second = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    finally:
        first_status = first.wait(timeout=600)
    one_line_error(second, str(out), "in use by another tractseg-aot run")
    assert first_status == 0, first.stderr.read()
    assert all(row["status"] == "done" for row in table(out).values())


def test_switching_layout_and_a_done_record_made_a_directory(tract_small, tmp_path):
    study_of(tmp_path / "study", 1)
    out = tmp_path / "out"
    base = (tmp_path / "study", "-o", out, "--artifacts", tract_small, "--workers", "0", "--quiet")
    assert cohort(*base).returncode == 0
    assert (out / "sub-01" / "bundle_segmentations").is_dir()
    assert cohort(*base, "--single_output_file").returncode == 0
    assert (out / "sub-01" / "bundle_segmentations.nii.gz").is_file()
    assert not (out / "sub-01" / "bundle_segmentations").exists()  # the old layout is gone, not left beside
    record = out / "sub-01" / DONE_NAME
    record.unlink()
    record.mkdir()
    done = cohort(*base)
    assert done.returncode == 0, done.stderr
    assert record.is_file() and table(out)["sub-01"]["status"] == "done"


def test_duplicate_ids_in_a_list_are_named_as_such(tract_small, tmp_path):
    study_of(tmp_path / "study", 2)
    listing = tmp_path / "list.csv"
    files = sorted((tmp_path / "study").glob("*/dwi/*.nii.gz"))
    listing.write_text(f"subject,peaks\nx,{files[0]}\nx,{files[1]}\n")
    done = cohort("--list", listing, "-o", tmp_path / "out", "--artifacts", tract_small, "--workers", "0")
    line = one_line_error(done, "'x'", "the --list CSV gives it twice")
    assert "give ids with" not in line


def test_interrupt_under_dask_is_quiet_and_says_what_was_written(tract_small, tmp_path):
    pytest.importorskip("distributed", reason="the [cohort] extra (Dask) is not installed")
    ids = study_of(tmp_path / "study", 6)
    out = tmp_path / "out"
    run = subprocess.Popen([sys.executable, "-m", "runtime.cohort", str(tmp_path / "study"), "-o", str(out),
                            "--artifacts", str(tract_small), "--workers", "1", "--quiet"], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while not (out / ids[0] / DONE_NAME).exists() and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole process group
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 130, stderr
    assert "Traceback" not in stderr and "Couldn't gather" not in stderr, stderr
    assert stderr.strip().splitlines()[-1].startswith("tractseg-aot: interrupted, after the outputs under"), stderr
    with open(out / "cohort.csv", newline="") as f:
        rows = {row["subject"]: row for row in csv.DictReader(f)}
    assert rows[ids[0]]["status"] == "done"


def test_cohort_table_that_cannot_be_written_is_one_line(tract_small, tmp_path):
    """A rerun that finds every subject done but cannot write cohort.csv (here a file-size limit, as a full disk
    would): one line naming the table, exit 1."""
    import resource

    study_of(tmp_path / "study", 2)
    out = tmp_path / "out"
    args = (tmp_path / "study", "-o", out, "--artifacts", tract_small, "--workers", "0", "--quiet")
    assert cohort(*args).returncode == 0
    before = (out / "cohort.csv").read_bytes()
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))  # noqa: E731 (bytes)
    done = cohort(*args, preexec_fn=limit)
    one_line_error(done, str(out / "cohort.csv"), "cannot be written")
    assert (out / "cohort.csv").read_bytes() == before  # the old table stays whole (atomic replace)
