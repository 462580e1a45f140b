"""python -m benchmarks cohort-rerun: the study runner's rerun ("what is done") at full scale, measured rather
than extrapolated. One real subject is run by ``runtime.cohort --workers 0 --single_output_file`` on the S=16
bundle; its input, output and done-record are then replicated into N subject folders (hard links for the input
and the output, so sizes and mtimes are real; the done-record rewritten with each subject's id and path, the rest
as the runner wrote it). The rerun must find all N done and run nothing; wall time and the driver's peak RSS are
recorded. Results: benchmarks/out/<timestamp>-cohort-rerun/results.{json,md}."""
from __future__ import annotations

import errno
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks import bundle as bundles
from benchmarks.cohort_common import failure, finish, log, plan, python_module, timed
from benchmarks.machine import machine_kind
from benchmarks.report import write_json_md

DONE_NAME = ".tractseg-aot-done.json"  # runtime.cohort.records.DONE_NAME (benchmarks read the files, not the code)
OUTPUT = "bundle_segmentations.nii.gz"


def _link(source: Path, target: Path) -> Path:
    """Hard-link ``source`` to ``target``; past the file system's link limit (65,000 on ext4) ``target`` becomes
    a copy with the same mtime (what a done-record compares) and the source of the next links."""
    try:
        os.link(source, target)
        return source
    except OSError as error:
        if error.errno != errno.EMLINK:
            raise
        shutil.copy2(source, target)
        return target


def replicate(inputs: Path, out: Path, n: int, first: str) -> float:
    """N subjects sub-XXXXXX that look exactly like ``first`` after a finished run; returns seconds taken."""
    t0 = time.perf_counter()
    source = inputs / first / "peaks.nii.gz"
    record = json.loads((out / first / DONE_NAME).read_text())
    output = out / first / OUTPUT
    for i in range(n):
        sid = f"sub-{i:06d}"
        if sid == first:
            continue
        (inputs / sid).mkdir(parents=True, exist_ok=True)
        (out / sid).mkdir(parents=True, exist_ok=True)
        source = _link(source, inputs / sid / "peaks.nii.gz")
        output = _link(output, out / sid / OUTPUT)
        path = str(inputs / sid / "peaks.nii.gz")
        (out / sid / DONE_NAME).write_text(json.dumps({**record, "subject": sid, "input": {**record["input"],
                                                                                           "path": path},
                                                       "row": {**record["row"], "subject": sid, "peaks": path}}))
    return round(time.perf_counter() - t0, 1)


def run(args) -> tuple[dict[str, Any], str, dict[str, Path]]:
    begin = bundles.start_run("cohort-rerun", args.out, args.bundle, bundles.export_args(0, 16, 3, "onnx", "cpu"),
                              log=log)
    from export.demo_input import write_demo_peaks

    n = args.subjects
    work = begin.outdir / "work"
    shutil.rmtree(work, ignore_errors=True)
    inputs, out = work / "inputs", work / "out"
    first = "sub-000000"
    write_demo_peaks(inputs / first / "peaks.nii.gz", tuple(int(s) for s in args.shape.split(",")), seed=0)
    common = ["--artifacts", str(begin.path), "--backend", args.backend, "--workers", "0", "--single_output_file",
              "--pattern", "**/peaks.nii.gz"]
    one = timed(python_module("runtime.cohort", [str(inputs), "-o", str(out), *common]))
    runs: dict[str, Any] = {}
    problems = [f"first subject: {failure(one)}"] if failure(one) else []
    if not problems:
        log(f"[bench] replicating to {n:,} subjects ...")
        replicate_s = replicate(inputs, out, n, first)
        for name in ("rerun (cold start)", "rerun (again)"):
            log(f"[bench] {name}: runtime.cohort ... ({n:,} subjects)")
            r = timed(python_module("runtime.cohort", [str(inputs), "-o", str(out), *common]), driver_rss=True)
            r.update(plan(r["stdout"]), error=failure(r))
            log(f"[bench]   {r['wall_s']:.2f} s, ran {r.get('to_run')}, driver {r['driver_peak_rss_mb']} MB")
            if r.get("to_run") != 0 or r.get("subjects") != n:
                problems.append(f"{name}: {r.get('subjects')} subjects, ran {r.get('to_run')} (expected {n}, 0)")
            runs[name] = {k: v for k, v in r.items() if k not in ("stdout", "stderr")}
        runs["replicate_s"] = replicate_s
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    result = {"mode": "cohort-rerun", "started": begin.started, "machine": begin.machine,
              "machine_kind": machine_kind(begin.machine), "bundle": bundles.describe(begin.manifest),
              "subjects": n, "runs": runs, "problems": problems,
              "wall_s": round(time.perf_counter() - begin.t0, 1)}
    text = markdown(result)
    return result, text, write_json_md(result, text, begin.outdir)


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [f"**cohort-rerun** benchmark, {result['started']}, {result['wall_s']:.0f} s. {m['cpu_model']}, "
             f"{m['usable_cpus']} CPUs; load average at start {m['load_average_at_start']}. "
             f"{result['subjects']:,} subjects found done (replicated from one real run, "
             f"{result['runs'].get('replicate_s', '-')} s to lay out), `--workers 0 --single_output_file`.", "",
             "| run | subjects | ran | wall s (the whole command) | driver peak RSS MB |", "|---|---|---|---|---|"]
    for name, r in result["runs"].items():
        if isinstance(r, dict):
            lines.append(f"| {name} | {r.get('subjects', '?')} | {r.get('to_run', '?')} | {r['wall_s']:.2f} | "
                         f"{r.get('driver_peak_rss_mb') or '-'} |")
    lines += [f"**PROBLEM**: {p}" for p in result["problems"]]
    return "\n".join(lines) + "\n"


def main(args) -> int:
    result, text, paths = run(args)
    return finish(text, paths, bool(result["problems"]))
