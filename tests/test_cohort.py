"""python -m runtime.cohort on real small bundles (S=16) and real NIfTI studies: outputs equal runtime.run's, bad
subjects fail alone, reruns resume without recomputing, kill -9 of the run and of a Dask worker, a real Dask
cluster (scheduler + two workers on 127.0.0.1)."""
from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from runtime.cohort.records import DONE_NAME
from tests.run_support import REPO, files_under, save_peaks, synthetic_peaks

pytest.importorskip("distributed", reason="the [cohort] extra (Dask) is not installed")
SHAPE = (40, 48, 38)  # big enough that writing a subject takes a moment (the kill tests catch it mid-run)


def make_study(root: Path, good: int, bad: bool = True) -> list[str]:
    """sub-01.. with real synthetic peaks (BIDS-like), plus a corrupt file and a 3D image when ``bad``."""
    ids = []
    for i in range(good):
        sid = f"sub-{i + 1:02d}"
        save_peaks(root / sid / "dwi" / f"{sid}_peaks.nii.gz", synthetic_peaks(SHAPE, seed=i))
        ids.append(sid)
    if bad:
        (root / "sub-90" / "dwi").mkdir(parents=True)
        (root / "sub-90" / "dwi" / "sub-90_peaks.nii.gz").write_bytes(b"not a nifti")
        save_peaks(root / "sub-91" / "dwi" / "sub-91_peaks.nii.gz", synthetic_peaks(SHAPE)[..., :3])
    return ids


def cohort(*args, timeout: float = 600, **popen) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime.cohort", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, **popen)


def table(outroot: Path) -> dict[str, dict[str, str]]:
    with open(outroot / "cohort.csv", newline="") as f:
        return {row["subject"]: row for row in csv.DictReader(f)}


def masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(nib.load(p).dataobj) for p in sorted((folder / "bundle_segmentations").iterdir())}


def assert_complete_or_absent(outroot: Path, subject: str) -> bool:
    """No partial output under a final name: a subject folder holds all 72 masks or none. Returns done."""
    folder = outroot / subject
    final = [p for p in files_under(folder) if not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    assert len(final) in (0, 72), f"{subject}: {len(final)} final files"
    done = (folder / DONE_NAME).is_file()
    assert not done or len(final) == 72
    return done


def test_study_outputs_failures_and_resume(tract_small, tmp_path):
    ids = make_study(tmp_path / "study", 3)
    out = tmp_path / "out"
    first = cohort(tmp_path / "study", "-o", out, "--artifacts", tract_small, "--workers", "2", "--quiet",
                   "--statistics")
    assert first.returncode == 1, first.stderr  # two bad subjects
    with open(out / "statistics.csv", newline="") as f:
        volumes = {row["subject"]: row for row in csv.DictReader(f)}
    assert sorted(volumes) == [*ids, "sub-90", "sub-91"] and float(volumes["sub-01"]["CST_left"]) >= 0
    assert "sub-90" in (out / "report.html").read_text() and (out / "sub-01" / "statistics.json").is_file()
    rows = table(out)
    assert sorted(rows) == [*ids, "sub-90", "sub-91"]
    assert all(rows[s]["status"] == "done" for s in ids)
    assert "not a NIfTI image" in rows["sub-90"]["error"] and "expected a 4D peak image" in rows["sub-91"]["error"]
    assert all("\n" not in r["error"] for r in rows.values()) and not (out / "sub-90").exists()
    timings = json.loads((out / "sub-01" / DONE_NAME).read_text())["timings_s"]  # where a subject's time went
    assert timings["network"] > 0 and timings["total"] >= timings["network"] + timings["postprocess_write"]

    single = tmp_path / "single"  # the same subject through runtime.run
    done = subprocess.run([sys.executable, "-m", "runtime.run", str(tmp_path / "study/sub-02/dwi/sub-02_peaks.nii.gz"),
                           "-o", str(single), "--artifacts", tract_small, "--quiet"], cwd=REPO, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    ours, theirs = masks(out / "sub-02"), masks(single)
    assert ours.keys() == theirs.keys() and all(np.array_equal(ours[k], theirs[k]) for k in ours)
    assert sum(int(v.sum()) for v in ours.values()) > 0

    records = {s: (out / s / DONE_NAME).stat().st_mtime_ns for s in ids}
    again = cohort(tmp_path / "study", "-o", out, "--artifacts", tract_small, "--workers", "0", "--statistics")
    assert again.returncode == 1 and "3 done earlier, 2 to run" in again.stdout
    assert {s: (out / s / DONE_NAME).stat().st_mtime_ns for s in ids} == records, "a done subject was recomputed"

    os.utime(tmp_path / "study/sub-03/dwi/sub-03_peaks.nii.gz")  # the input changed: redo that subject only
    (tmp_path / "study/sub-90/dwi/sub-90_peaks.nii.gz").unlink()
    (tmp_path / "study/sub-91/dwi/sub-91_peaks.nii.gz").unlink()
    third = cohort(tmp_path / "study", "-o", out, "--artifacts", tract_small, "--workers", "0", "--statistics")
    assert third.returncode == 0 and "2 done earlier, 1 to run" in third.stdout, third.stdout + third.stderr
    assert (out / "sub-03" / DONE_NAME).stat().st_mtime_ns != records["sub-03"]
    assert (out / "sub-01" / DONE_NAME).stat().st_mtime_ns == records["sub-01"]


def test_job_array_parts_run_together_then_a_plain_run_merges(tract_small, tmp_path):
    """A cluster job array starts its parts at once on one output root: both run (each subject has one writer),
    and a plain run afterwards merges them."""
    ids = make_study(tmp_path / "study", 3, bad=False)
    out = tmp_path / "out"
    parts = [subprocess.Popen([sys.executable, "-m", "runtime.cohort", str(tmp_path / "study"), "-o", str(out),
                               "--artifacts", str(tract_small), "--workers", "0", "--quiet", "--num-parts", "2",
                               "--part-id", str(part)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for part in (0, 1)]
    results = [(part.wait(timeout=600), part.stderr.read()) for part in parts]
    assert [code for code, _ in results] == [0, 0], results
    assert (out / "cohort.part-0-of-2.csv").is_file() and (out / "cohort.part-1-of-2.csv").is_file()
    merged = cohort(tmp_path / "study", "-o", out, "--artifacts", tract_small, "--workers", "0")
    assert merged.returncode == 0 and "3 done earlier, 0 to run" in merged.stdout
    assert sorted(table(out)) == ids


def test_another_study_on_a_running_root_is_refused(tract_small, tmp_path):
    """Parts of one study share the root; a study with other options (or bundle, or number of parts) is refused
    while one runs there, in one line, before any work; once it ends, its lock is stale and the root is free."""
    from runtime.cohort.study_lock import study_key, study_lock

    make_study(tmp_path / "study", 1, bad=False)
    out = tmp_path / "out"
    out.mkdir()
    with study_lock(out, study_key("another bundle", {"statistics": True}, 2), 2, 1):
        refused = cohort(tmp_path / "study", "-o", out, "--artifacts", tract_small, "--workers", "0", "--quiet")
    errors = [line for line in refused.stderr.splitlines() if line.startswith("tractseg-aot: error:")]
    assert refused.returncode == 1 and len(errors) == 1, refused.stderr
    assert "in use by another tractseg-aot study" in errors[0] and not (out / "sub-01").exists()
    done = cohort(tmp_path / "study", "-o", out, "--artifacts", tract_small, "--workers", "0", "--quiet")
    assert done.returncode == 0, done.stderr


def test_kill_9_of_the_whole_run_then_rerun(tract_small, tmp_path):
    ids = make_study(tmp_path / "study", 6, bad=False)
    out = tmp_path / "out"
    run = subprocess.Popen([sys.executable, "-m", "runtime.cohort", str(tmp_path / "study"), "-o", str(out),
                            "--artifacts", tract_small, "--workers", "2", "--quiet"], cwd=REPO,
                           start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any((out / s / DONE_NAME).exists() for s in ids):
        time.sleep(0.02)
    os.killpg(run.pid, signal.SIGKILL)  # the driver, its scheduler and the worker processes
    run.wait()
    finished = {s: (out / s / DONE_NAME).stat().st_mtime_ns for s in ids if assert_complete_or_absent(out, s)}
    assert 0 < len(finished) < len(ids), f"kill came too late or too early: {len(finished)} done"

    rerun = cohort(tmp_path / "study", "-o", out, "--artifacts", tract_small, "--workers", "2")
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(finished)} done earlier" in rerun.stdout
    assert all(assert_complete_or_absent(out, s) for s in ids)
    assert {s: (out / s / DONE_NAME).stat().st_mtime_ns for s in finished} == finished, "done subject recomputed"
    assert not list(out.glob("*/.tractseg-aot-staging-*")), "stale staging folders are cleaned"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_dask_cluster_survives_a_killed_worker(tract_small, tmp_path):
    ids = make_study(tmp_path / "study", 6, bad=False)
    out, port = tmp_path / "out", free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "3"}
    procs = [subprocess.Popen([str(Path(sys.executable).parent / "dask"), "scheduler", "--host", "127.0.0.1",
                               "--port", str(port), "--no-dashboard"], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        time.sleep(2)
        workers = [subprocess.Popen([str(Path(sys.executable).parent / "dask"), "worker", address, "--nthreads", "1",
                                     "--no-nanny", "--no-dashboard", "--name", f"w{i}"], cwd=REPO, env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(2)]
        procs += workers
        run = subprocess.Popen([sys.executable, "-m", "runtime.cohort", str(tmp_path / "study"), "-o", str(out),
                                "--artifacts", tract_small, "--scheduler", address, "--quiet"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        pids = {w.pid: w for w in workers}
        victim, deadline = None, time.monotonic() + 300
        while victim is None and time.monotonic() < deadline and run.poll() is None:
            for lock in out.glob("*/.tractseg-aot.lock"):
                try:
                    holder = int(lock.read_text().strip() or 0)
                except (OSError, ValueError):
                    continue
                if holder in pids:
                    victim = (lock.parent.name, pids[holder])
                    os.kill(holder, signal.SIGKILL)  # mid-subject: it holds that subject's folder lock
                    break
            time.sleep(0.01)
        stdout, stderr = run.communicate(timeout=600)
        assert victim is not None, "no worker was caught mid-subject"
        assert run.returncode == 0, stderr[-2000:]
        rows = table(out)
        assert all(rows[s]["status"] == "done" for s in ids) and all(assert_complete_or_absent(out, s) for s in ids)
        survivor = next(w for w in workers if w is not victim[1])
        assert survivor.poll() is None and victim[1].wait(10) == -signal.SIGKILL
        single = tmp_path / "single"
        subprocess.run([sys.executable, "-m", "runtime.run", str(tmp_path / f"study/{victim[0]}/dwi/{victim[0]}_peaks.nii.gz"),
                        "-o", str(single), "--artifacts", tract_small, "--quiet"], cwd=REPO, check=True)
        ours, theirs = masks(out / victim[0]), masks(single)
        assert all(np.array_equal(ours[k], theirs[k]) for k in theirs), "retried subject equals runtime.run's"
    finally:
        for p in procs:
            p.kill()
            p.wait()


def _slow_square(x: int) -> int:
    time.sleep(0.01)
    return x * x


def test_submit_window_bounds_what_is_in_flight():
    """A real (threaded) Dask cluster: every subject comes back once, and never more than the window are submitted
    and unfinished, so a 100,000-subject study does not hold 100,000 futures in the driver and scheduler."""
    import distributed

    from runtime.cohort.engine import submit_window
    from runtime.cohort.subjects import Subject

    subjects = [Subject(f"sub-{i:03d}", Path(f"/data/{i}.nii.gz")) for i in range(40)]
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=":0") as client:
        in_flight: set = set()
        most = 0

        def submit(subject):
            nonlocal most
            future = client.submit(_slow_square, int(subject.peaks.stem.split(".")[0]), pure=False)
            in_flight.add(future)
            most = max(most, sum(not f.done() for f in in_flight))
            return future

        seen = []
        for future, subject in submit_window(submit, distributed.as_completed, subjects, window=5):
            assert future.result() == int(subject.id[4:]) ** 2
            in_flight.discard(future)
            seen.append(subject.id)
    assert sorted(seen) == [s.id for s in subjects]
    assert 3 <= most <= 5  # unfinished when a subject is submitted; all 40 at once would give ~40


def test_default_workers_budget_memory_per_subject_kind():
    """Workers are capped by memory: 2.5 GB a peaks subject, 5.0 GB a raw-DWI one (HCP size measured 1.9 GB and
    3.7 GB peak RSS); never fewer than one, never more than cores // threads."""
    from runtime.cohort.engine import default_workers

    assert default_workers(16, 12.0, 1) == 4
    assert default_workers(16, 12.0, 1, raw_diffusion=True) == 2
    assert default_workers(16, 3.0, 1, raw_diffusion=True) == 1
    assert default_workers(4, None, 2, raw_diffusion=True) == 2
