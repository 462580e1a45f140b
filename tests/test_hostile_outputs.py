"""Hostile places and moments for the outputs: --report on an output or the input, full disks, two runs on one
folder, signals while the run writes, output folders that are symbolic link loops, --nr_cpus beyond the machine, and
an internal error. No traceback, no partial output set, ever.

Every refusal here is the CLI's contract (tests.run_support.refused / check_one_error): exit status 1, exactly one
stderr line "tractseg-aot: error: <file>: <what>", and no file written. Runs that need a real process (signals, two
runs racing for one folder) start ``python -m runtime.run`` in a subprocess; the rest call ``runtime.run.main`` in
this process. Checks are proved to come before the network by making the backend's opening fail the test (fixture
``no_network``, in conftest.py).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from runtime.cli import guarded
from runtime.run import main
from tests.run_support import (N_BUNDLES, check_one_error, files_under, final_files, read, refused, run_args,
                               save_peaks, staging_folders, start_cli, synthetic_peaks, wait)


# ---------------------------------------------------------------- 5. --report on an output or the input


def test_report_on_an_output_is_refused(capsys, tmp_path, tract_small, good, no_network):
    report = tmp_path / "out" / "bundle_segmentations" / "CA.nii.gz"
    line = refused(capsys, tmp_path, *run_args(good, tract_small, tmp_path, "--report", report),
                   expect="is one of the outputs")
    assert str(report) in line


def test_report_on_the_input_is_refused_even_with_force(capsys, tmp_path, tract_small, good, no_network):
    before, stat = good.read_bytes(), good.stat()
    line = refused(capsys, tmp_path, *run_args(good, tract_small, tmp_path, "--report", good, "--force"),
                   expect="is the input")
    assert str(good) in line
    assert good.read_bytes() == before and good.stat().st_mtime_ns == stat.st_mtime_ns


# ---------------------------------------------------------------- 6. a full disk


@pytest.fixture()
def small_tmpfs(tmp_path):
    """A 300 kB tmpfs (root only); unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_disk_full_while_writing(capsys, tmp_path, tract_small, small_tmpfs):
    peaks = save_peaks(tmp_path / "in" / "peaks.nii.gz", synthetic_peaks((40, 48, 40)))  # outputs > 300 kB
    assert main([str(a) for a in (peaks, "-o", small_tmpfs, "--artifacts", tract_small, "--quiet")]) == 1
    line = check_one_error(capsys.readouterr().err, "no space left")
    assert str(small_tmpfs) in line and re.search(r"they need up to [\d.]+ [kMG]B", line), line
    assert files_under(small_tmpfs) == [] and list(small_tmpfs.iterdir()) == []  # nothing at all

    subprocess.run(["umount", str(small_tmpfs)], check=True)  # now the folder has the space of tmp_path
    assert main([str(a) for a in (peaks, "-o", small_tmpfs, "--artifacts", tract_small, "--quiet")]) == 0
    assert len(final_files(small_tmpfs)) == N_BUNDLES and staging_folders(small_tmpfs) == []


def test_disk_full_for_the_report_only(capsys, tmp_path, tract_small, good, small_tmpfs):
    """Outputs fit, the report does not: one line that says so; the output set is complete."""
    try:  # fill the tmpfs
        with open(small_tmpfs / "filler", "wb") as f:
            while True:
                f.write(b"x" * 4096)
                f.flush()
    except OSError:
        pass
    out = tmp_path / "out"
    code = main([str(a) for a in (good, "-o", out, "--artifacts", tract_small, "--quiet",
                                  "--report", small_tmpfs / "report.json")])
    assert code == 1
    line = check_one_error(capsys.readouterr().err, "--report")
    assert "cannot be written" in line and str(out) in line
    assert len(final_files(out)) == N_BUNDLES
    assert not (small_tmpfs / "report.json").exists()


# ---------------------------------------------------------------- 7. two runs, one folder


def _arrays(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: read(p)[0] for p in final_files(folder)}


def test_two_runs_on_one_folder(capsys, tmp_path, tract_small):
    """Both start together; the first to lock the folder writes its whole set, the other is refused at once (or,
    had it come after the first finished, by the existing outputs). The folder then holds one run's outputs."""
    inputs = {"a": save_peaks(tmp_path / "a.nii.gz", synthetic_peaks((40, 48, 40), seed=1)),
              "b": save_peaks(tmp_path / "b.nii.gz", synthetic_peaks((44, 50, 42), seed=2))}
    saw_lock = False
    for attempt in range(3):
        out = tmp_path / f"shared-{attempt}"
        processes = {k: start_cli(p, "-o", out, "--artifacts", tract_small, "--quiet") for k, p in inputs.items()}
        results = {k: wait(p) for k, p in processes.items()}
        winners = [k for k, (code, _, _) in results.items() if code == 0]
        assert len(winners) == 1, results
        (winner,), (loser,) = winners, [k for k in results if k not in winners]
        code, _, err = results[loser]
        assert code == 1, err
        line = check_one_error(err, ("in use by another tractseg-aot run", "already exist"))
        if "in use" in line:
            assert f"(pid {processes[winner].pid})" in line, line
            saw_lock = True
        assert sorted(p.name for p in out.iterdir()) == ["bundle_segmentations"]  # no staging, no lock file
        written = _arrays(out)
        assert len(written) == N_BUNDLES
        if saw_lock:
            break
    assert saw_lock, "the second run never met the first one's lock in 3 attempts"

    reference = tmp_path / "reference"
    assert main([str(a) for a in (inputs[winner], "-o", reference, "--artifacts", tract_small, "--quiet")]) == 0
    capsys.readouterr()
    expected = _arrays(reference)
    assert expected.keys() == written.keys()
    for name, data in expected.items():
        assert written[name].shape == data.shape and np.array_equal(written[name], data), name


# ---------------------------------------------------------------- 8. signals


def _start_and_wait_for_staging(peaks: Path, out: Path, bundle: str) -> subprocess.Popen:
    process = start_cli(peaks, "-o", out, "--artifacts", bundle, "--quiet")
    deadline = time.monotonic() + 120
    while not staging_folders(out):
        if process.poll() is not None:
            pytest.fail(f"the run ended before its staging folder was seen: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("no staging folder after 120 s")
        time.sleep(0.005)
    return process


@pytest.mark.parametrize("sig,code,word", [(signal.SIGINT, 130, "interrupted"),
                                           (signal.SIGTERM, 143, "terminated")], ids=["SIGINT", "SIGTERM"])
def test_signal_while_running(tmp_path, tract_small, sig, code, word):
    peaks = save_peaks(tmp_path / "in" / "peaks.nii.gz", synthetic_peaks((40, 48, 40)))
    out = tmp_path / "out"
    process = _start_and_wait_for_staging(peaks, out, tract_small)
    process.send_signal(sig)
    returncode, _, err = wait(process)
    assert returncode == code, err
    lines = [line for line in err.splitlines() if "demo weights" not in line]
    assert lines == [f"tractseg-aot: {word}, no outputs written"], err
    assert final_files(out) == [] and staging_folders(out) == []


def test_sigkill_leaves_no_final_file_and_the_next_run_cleans_up(capsys, tmp_path, tract_small):
    peaks = save_peaks(tmp_path / "in" / "peaks.nii.gz", synthetic_peaks((40, 48, 40)))
    out = tmp_path / "out"
    process = _start_and_wait_for_staging(peaks, out, tract_small)
    time.sleep(0.3)  # into the network or the writing
    process.kill()
    returncode, _, err = wait(process)
    assert returncode == -signal.SIGKILL and "Traceback" not in err
    assert final_files(out) == []
    # the next run on the same folder: takes the lock (the kernel released it), removes the stale staging folder
    assert main([str(a) for a in (peaks, "-o", out, "--artifacts", tract_small, "--quiet")]) == 0
    capsys.readouterr()
    assert len(final_files(out)) == N_BUNDLES
    assert sorted(p.name for p in out.iterdir()) == ["bundle_segmentations"]


# ---------------------------------------------------------------- also


def test_output_folder_is_a_symbolic_link_loop(capsys, tmp_path, tract_small, good, no_network):
    a, b = tmp_path / "loop-a", tmp_path / "loop-b"
    a.symlink_to(b)
    b.symlink_to(a)
    line = refused(capsys, tmp_path, good, "-o", a, "--artifacts", tract_small, "--quiet",
                   expect="symbolic link loop")
    assert str(a) in line


def test_report_into_proc(capsys, tmp_path, tract_small, good, no_network):
    line = refused(capsys, tmp_path, *run_args(good, tract_small, tmp_path, "--report", "/proc/xyz.json"),
                   expect="not writable")
    assert "/proc/xyz.json" in line and "No such file" not in line


def test_nr_cpus_is_capped(capsys, tmp_path, tract_small, good):
    pytest.importorskip("onnxruntime")
    report = tmp_path / "report.json"
    code = main([str(a) for a in run_args(good, tract_small, tmp_path, "--nr_cpus", "1000", "--backend",
                                          "onnxruntime", "--report", report)])
    err = capsys.readouterr().err
    assert code == 0, err
    capped = [line for line in err.splitlines() if "capped" in line]
    assert len(capped) == 1 and capped[0].startswith("tractseg-aot: warning: --nr_cpus 1000 capped"), err
    assert 1 <= json.loads(report.read_text())["backend"]["nr_cpus"] <= os.cpu_count()
    assert len(final_files(tmp_path / "out")) == N_BUNDLES


def test_internal_error_saves_the_traceback(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def action():
        raise RuntimeError("a bug in the runtime")

    assert guarded(action) == 3
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tractseg-aot: internal error, please report: RuntimeError: "
                                                   "a bug in the runtime (traceback saved to "), err
    saved = Path(re.search(r"traceback saved to (.+)\)$", lines[0]).group(1))
    assert saved.parent == tmp_path and saved.is_file()
    text = saved.read_text()
    assert "Traceback (most recent call last)" in text and "RuntimeError: a bug in the runtime" in text
