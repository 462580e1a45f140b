"""python -m benchmarks cohort-scale: what `runtime.cohort` itself costs as a study grows: N tiny subjects on a
small (S=16) bundle, so the runner, not the network, is what is measured. First run, rerun (must run nothing),
the driver's peak memory, in-process per-subject time, and a linear extrapolation to 100,000 subjects.
Results: benchmarks/out/<timestamp>-cohort-scale/results.{json,md}."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks import bundle as bundles
from benchmarks.cohort_common import (failure, finish, linear, log, plan, python_module, rows_summary,
                                      table_rows, timed)
from benchmarks.machine import machine_kind
from benchmarks.report import write_json_md

TARGET = 100_000


def make_tree(root: Path, n: int, source: Path) -> Path:
    """root/sub-XXXX/sub-XXXX_peaks.nii.gz for N subjects, hard links to one file (same size and mtime, which
    the done-records compare; a copy where links are impossible)."""
    width = max(4, len(str(n - 1)))
    for i in range(n):
        sid = f"sub-{i:0{width}d}"
        (root / sid).mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, root / sid / f"{sid}_peaks.nii.gz")
        except OSError:
            shutil.copy2(source, root / sid / f"{sid}_peaks.nii.gz")
    return root


def cohort(inputs: Path, out: Path, run_args: list[str], extra: list[str]) -> dict[str, Any]:
    log(f"[bench] runtime.cohort {inputs.name} -o {out.name} {' '.join(extra)} ...")
    run = timed(python_module("runtime.cohort", [str(inputs), "-o", str(out), *run_args, *extra]), driver_rss=True)
    run.update(plan(run["stdout"]), error=failure(run), **rows_summary(table_rows(out)))
    run["subjects_per_s"] = round(run.get("subjects", 0) / run["wall_s"], 3)
    log(f"[bench]   {run['wall_s']:.2f} s, ran {run.get('to_run')}, driver {run['driver_peak_rss_mb']} MB "
        f"{run['error'] or ''}")
    return {k: v for k, v in run.items() if k not in ("stdout", "stderr")}


def derived(first: dict[str, Any], inproc: dict[str, Any], n: int, m: int) -> dict[str, Any]:
    p = max(1, min(first.get("workers") or 1, n))
    per_dask, per_inproc = first["wall_s"] / n, inproc["wall_s"] / m
    return {
        "parallelism": p,
        "runner_overhead_per_subject_s": round((first["wall_s"] - first["subject_seconds_sum"] / p) / n, 4),
        "in_process_overhead_per_subject_s": round((inproc["wall_s"] - inproc["subject_seconds_sum"]) / m, 4),
        "per_subject_wall_dask_s": round(per_dask, 4), "per_subject_wall_in_process_s": round(per_inproc, 4),
        "dask_minus_in_process_per_subject_s": round(per_dask - per_inproc, 4),
        "dask_minus_in_process_core_s_per_subject": round(p * per_dask - per_inproc, 4),
        "subject_seconds_mean_dask": first["subject_seconds_mean"],
        "subject_seconds_mean_in_process": inproc["subject_seconds_mean"],
    }


def run(args) -> tuple[dict[str, Any], str, dict[str, Path]]:
    begin = bundles.start_run("cohort-scale", args.out, args.bundle, bundles.export_args(0, 16, 3, "onnx", "cpu"),
                              log=log)
    t0, started, outdir, machine, path, how, manifest = (begin.t0, begin.started, begin.outdir, begin.machine,
                                                         begin.path, begin.how, begin.manifest)
    from export.demo_input import write_demo_peaks

    n = args.subjects
    m = max(1, min(args.subset, n // 4))
    shape = tuple(int(s) for s in args.shape.split(","))
    work = outdir / "work"
    shutil.rmtree(work, ignore_errors=True)
    source = write_demo_peaks(work / "source_peaks.nii.gz", shape, seed=0)
    t_tree = time.perf_counter()
    small, full = make_tree(work / "inputs-small", m, source), make_tree(work / "inputs", n, source)
    tree_s = round(time.perf_counter() - t_tree, 2)
    run_args = ["--artifacts", str(path), "--backend", args.backend, "--device", args.device]
    extra = ["--workers", str(args.workers)] if args.workers is not None else []
    runs = {"first run, M subjects": cohort(small, work / "out-small", run_args, extra),
            "first run, N subjects": cohort(full, work / "out", run_args, extra),
            "rerun, N subjects": cohort(full, work / "out", run_args, extra),
            "rerun, M subjects": cohort(small, work / "out-small", run_args, extra),
            "in-process (--workers 0), M subjects": cohort(small, work / "out-in-process", run_args,
                                                            ["--workers", "0"])}
    problems = [f"{name}: {r['error']}" for name, r in runs.items() if r["error"]]
    for name, r in runs.items():
        expect = 0 if name.startswith("rerun") else r.get("subjects")
        if r.get("to_run") != expect:
            problems.append(f"{name}: ran {r.get('to_run')} subject(s), expected {expect}")
    first, rerun = runs["first run, N subjects"], runs["rerun, N subjects"]
    first_m, rerun_m = runs["first run, M subjects"], runs["rerun, M subjects"]
    result: dict[str, Any] = {
        "mode": "cohort-scale", "started": started, "machine": machine, "machine_kind": machine_kind(machine),
        "bundle": {**bundles.describe(manifest), "how": how}, "backend": {"requested": args.backend,
                                                                         "device": args.device},
        "subjects": {"n": n, "m": m, "shape": list(shape), "tree_s": tree_s,
                     "how": "one export.demo_input volume (seed 0), hard-linked into every sub-XXXX/"},
        "runs": runs, "problems": problems,
        "derived": derived(first, runs["in-process (--workers 0), M subjects"], n, m) if not problems else None,
        "extrapolated_to": {"subjects": TARGET, "note": "EXTRAPOLATED, not measured: the straight line through "
                                                        f"the N={m} and N={n} runs, evaluated at {TARGET:,}",
                            "rerun_decision_s": linear([(m, rerun_m["wall_s"]), (n, rerun["wall_s"])], TARGET),
                            "rerun_driver_peak_rss_mb": linear([(m, rerun_m["driver_peak_rss_mb"]),
                                                                (n, rerun["driver_peak_rss_mb"])], TARGET),
                            "first_run_driver_peak_rss_mb": linear([(m, first_m["driver_peak_rss_mb"]),
                                                                    (n, first["driver_peak_rss_mb"])], TARGET),
                            "first_run_wall_s_tiny_subjects": linear([(m, first_m["wall_s"]), (n, first["wall_s"])],
                                                                     TARGET)} if not problems else None,
    }
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    text = markdown(result)
    return result, text, write_json_md(result, text, outdir)


def markdown(result: dict[str, Any]) -> str:
    m, b, s = result["machine"], result["bundle"], result["subjects"]
    lines = [f"**cohort-scale** benchmark, {result['started']}, {result['wall_s']:.0f} s. {m['cpu_model']}, "
             f"{m['usable_cpus']} CPUs, {m['ram_gib']} GiB; load average at start {m['load_average_at_start']}.",
             f"Bundle {b['bundle_id']} (S={b['slice_size']}, B={b['batch_size']}, {b['weights']['source']}), "
             f"backend {result['backend']['requested']}; N = {s['n']} subjects (M = {s['m']} for the subset runs) "
             f"of {'x'.join(map(str, s['shape']))} voxels, one file hard-linked {s['n']} times.", "",
             "| run | subjects | ran | workers x threads | wall s | subjects/s | mean s/subject (in worker) | "
             "driver peak RSS MB | process tree max RSS MB | load before |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in result["runs"].items():
        on = f"{r.get('workers', '?')} x {r.get('threads_per_worker') or '-'}" if r.get("to_run") else "-"
        lines.append(f"| {name} | {r.get('subjects', '?')} | {r.get('to_run', '?')} | {on} | {r['wall_s']:.2f} | "
                     f"{r['subjects_per_s']:.2f} | "
                     f"{(r.get('to_run') and r.get('subject_seconds_mean')) or '-'} | "
                     f"{r.get('driver_peak_rss_mb') or '-'} | "
                     f"{r.get('process_tree_max_rss_mb') or '-'} | {(r.get('load_average_before') or ['-'])[0]} |")
    lines += ["", "driver peak RSS: VmHWM of the runtime.cohort process itself (read at its exit); process tree "
              "max RSS: /usr/bin/time -v, the largest of the driver and every child it waited for (the Dask "
              "workers), so not the driver's own figure on a first run."]
    for problem in result["problems"]:
        lines.append(f"**PROBLEM**: {problem}")
    d = result["derived"]
    if d:
        lines += ["", f"Runner overhead per subject (first run, N, P = {d['parallelism']} workers): (wall - sum of "
                  f"cohort.csv `seconds` / P) / N = **{d['runner_overhead_per_subject_s']:.4f} s**. `seconds` is "
                  "the time inside the worker's process_subject (a worker's first subject includes opening the "
                  "pipeline), so the rest is driver start-up, discovery, done-record checks, Dask cluster "
                  "start/stop, scheduling and result transfer, table writes and idle workers at the tail; it "
                  "assumes the P workers are evenly loaded.",
                  f"In-process (--workers 0, M): (wall - sum of `seconds`) / M = "
                  f"{d['in_process_overhead_per_subject_s']:.4f} s per subject; mean `seconds` "
                  f"{d['subject_seconds_mean_in_process']} s in-process vs {d['subject_seconds_mean_dask']} s on a "
                  "Dask worker.",
                  f"Dask path vs in-process, per subject: wall(Dask, N) / N - wall(in-process, M) / M = "
                  f"{d['per_subject_wall_dask_s']:.4f} - {d['per_subject_wall_in_process_s']:.4f} = "
                  f"**{d['dask_minus_in_process_per_subject_s']:+.4f} s** of elapsed time (negative: the parallel "
                  f"workers win); in core-seconds (x P): {d['dask_minus_in_process_core_s_per_subject']:+.4f} s."]
    e = result["extrapolated_to"]
    if e:
        lines += ["", f"**At {e['subjects']:,} subjects ({e['note']}):**", "",
                  f"| figure | N={result['subjects']['m']} | N={result['subjects']['n']} | per extra subject | "
                  f"at {e['subjects']:,} (EXTRAPOLATED) |", "|---|---|---|---|---|"]
        for key, label in (("rerun_decision_s", "rerun: time to find all done, s"),
                           ("rerun_driver_peak_rss_mb", "rerun: driver peak RSS, MB"),
                           ("first_run_driver_peak_rss_mb", "first run: driver peak RSS, MB"),
                           ("first_run_wall_s_tiny_subjects", "first run: wall s (these tiny subjects)")):
            f = e[key]
            if f["value"] is None:
                lines.append(f"| {label} | - | - | - | not measured |")
                continue
            value = "no growth measured" if f["no_growth_measured"] else f"{f['value']:,.1f}"
            lines.append(f"| {label} | {f['points'][0][1]} | {f['points'][1][1]} | {f['per_subject']:.6f} | "
                         f"{value} |")
    return "\n".join(lines) + "\n"


def main(args) -> int:
    result, text, paths = run(args)
    return finish(text, paths, bool(result["problems"]))
