"""Shared by the cohort benchmarks (cohort_throughput, cohort_scale): run and time a `runtime.run` /
`runtime.cohort` command as a user runs it, and read what it says (its plan line, OUTROOT/cohort.csv)."""
from __future__ import annotations

import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.machine import REPO, load_average
from runtime.cohort.records import TABLE_NAME, read_cohort_table

# Runs a module like `python -m MODULE ARGS` and, at interpreter exit, writes the process's own peak RSS
# (VmHWM, kB) to the file named by argv[1]. ru_maxrss cannot give the driver's own figure: Linux folds the peak
# of every waited-for child (the Dask workers) into it, and carries a parent's peak over fork + exec.
HWM_BOOT = """import atexit, runpy, sys
out, module = sys.argv[1], sys.argv[2]
del sys.argv[1:3]
def _hwm():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            open(out, 'w').write(line.split()[1])
atexit.register(_hwm)
sys.argv[0] = module
runpy.run_module(module, run_name='__main__', alter_sys=True)
"""
TIME_V = Path("/usr/bin/time")
PLAN = re.compile(r"(\d+) subject\(s\): (\d+) done earlier, (\d+) to run on (.+)$", re.MULTILINE)
WORKERS = re.compile(r"(\d+) worker\(s\) x (\d+) thread\(s\)")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def python_module(module: str, args: list[str]) -> list[str]:
    return [sys.executable, "-m", module, *args]


def timed(cmd: list[str], driver_rss: bool = False) -> dict[str, Any]:
    """Run ``cmd`` (from the repository root) and time it: wall seconds, and ``cpu_s``, the user + system CPU
    seconds of the command and every descendant that was waited for (bash's runtime.run processes, the Dask
    workers of an embedded cluster), from getrusage(RUSAGE_CHILDREN). With ``driver_rss`` a `python -m MODULE
    ...` command runs under :data:`HWM_BOOT` (its own peak RSS) and, when present, /usr/bin/time -v (the largest
    RSS of the process and every child it waited for)."""
    run = list(cmd)
    hwm = None
    if driver_rss:
        assert cmd[:2] == [sys.executable, "-m"], cmd
        handle, name = tempfile.mkstemp(prefix="bench-hwm-", suffix=".kb")
        os.close(handle)
        hwm = Path(name)
        run = [sys.executable, "-c", HWM_BOOT, str(hwm), *cmd[2:]]
        if TIME_V.is_file():
            run = [str(TIME_V), "-v", *run]
    load = load_average()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(run, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result: dict[str, Any] = {"command": " ".join(cmd[1:]), "wall_s": round(wall, 3), "exit": done.returncode,
                              "cpu_s": round(cpu, 1), "load_average_before": load, "stdout": done.stdout,
                              "stderr": done.stderr}
    if hwm is not None:
        text = hwm.read_text().strip()
        hwm.unlink(missing_ok=True)
        result["driver_peak_rss_mb"] = round(int(text) / 1024, 1) if text else None
        match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
        result["process_tree_max_rss_mb"] = round(int(match.group(1)) / 1024, 1) if match else None
    return result


def failure(run: dict[str, Any]) -> str | None:
    """None when the command exited 0, else a one-line reason (the end of its stderr)."""
    if run["exit"] == 0:
        return None
    tail = [line for line in run["stderr"].splitlines() if line.strip() and "Maximum resident" not in line]
    return f"exit {run['exit']}: {' | '.join(tail[-3:])[-600:]}"


def plan(stdout: str) -> dict[str, Any]:
    """What runtime.cohort's info line says it will do: subjects, done earlier, to run, workers x threads."""
    match = PLAN.search(stdout)
    if not match:
        return {}
    found: dict[str, Any] = {"subjects": int(match.group(1)), "done_earlier": int(match.group(2)),
                             "to_run": int(match.group(3)), "on": match.group(4).strip()}
    workers = WORKERS.search(match.group(4))
    if workers:
        found.update(workers=int(workers.group(1)), threads_per_worker=int(workers.group(2)))
    elif "this process" in match.group(4):
        found.update(workers=0, threads_per_worker=None)
    return found


def table_rows(outroot: Path) -> list[dict[str, str]]:
    path = outroot / TABLE_NAME
    return read_cohort_table(path) if path.is_file() else []


def floats(rows: list[dict[str, str]], field: str) -> list[float]:
    return [float(r[field]) for r in rows if r.get(field) not in (None, "")]


def rows_summary(rows: list[dict[str, str]]) -> dict[str, Any]:
    """Per-subject seconds and per-worker peak RSS (each worker's largest peak_rss_mb: its VmHWM after its
    last subject) from cohort.csv rows."""
    seconds = floats(rows, "seconds")
    peaks: dict[str, float] = {}
    for row in rows:
        if row.get("peak_rss_mb"):
            worker = row.get("worker") or "?"
            peaks[worker] = max(peaks.get(worker, 0.0), float(row["peak_rss_mb"]))
    return {"rows": len(rows), "done": sum(r["status"] == "done" for r in rows),
            "failed": [f"{r['subject']}: {r['error']}" for r in rows if r["status"] != "done"][:5],
            "subject_seconds_sum": round(sum(seconds), 3),
            "subject_seconds_mean": round(statistics.fmean(seconds), 3) if seconds else None,
            "subject_seconds_median": round(statistics.median(seconds), 3) if seconds else None,
            "peak_rss_mb_per_worker": peaks,
            "peak_rss_mb_max": max(peaks.values()) if peaks else None}


def linear(points: list[tuple[float, float]], at: float) -> dict[str, Any]:
    """The line through two (n, value) points, evaluated at ``at`` (an extrapolation, not a measurement). A
    slope <= 0 (no growth above the noise between the two points) gives the larger measured value, flagged."""
    (n1, v1), (n2, v2) = points
    if v1 is None or v2 is None:  # not measured here (no /proc: not Linux)
        return {"points": [list(p) for p in points], "at": at, "per_subject": None, "no_growth_measured": False,
                "value": None}
    slope = (v2 - v1) / (n2 - n1) if n2 != n1 else 0.0
    flat = slope <= 0
    return {"points": [list(p) for p in points], "intercept": round(v1 - slope * n1, 6),
            "per_subject": round(slope, 9), "at": at, "no_growth_measured": flat,
            "value": round(max(v1, v2) if flat else v1 + slope * (at - n1), 3)}


def finish(text: str, paths: dict[str, Path], failed: bool) -> int:
    """The end of every cohort benchmark command: the markdown on stdout, where it was saved on stderr, and the
    exit status (1 when a run failed or found a problem)."""
    print(text)
    for name, path in paths.items():
        print(f"[bench] {name}: {path}", file=sys.stderr)
    return 1 if failed else 0
