"""python -m benchmarks cohort-throughput: subjects per hour of a study, one `runtime.run` process per subject in
a shell loop against `runtime.cohort` (workers x threads), on N synthetic HCP-size subjects and the full-size
ONNX bundle (seeded random weights). Results: benchmarks/out/<timestamp>-cohort-throughput/results.{json,md}."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks import bundle as bundles
from benchmarks.cohort_common import failure, finish, log, plan, python_module, rows_summary, table_rows, timed
from benchmarks.machine import REPO, machine_kind
from benchmarks.report import write_json_md
from runtime.network.backends import choose
from runtime.cohort.engine import default_threads, default_workers
from runtime.cohort.records import read_done_record
from runtime.checks.input_checks import available_memory_bytes
from runtime.host import available_cores

INPUTS = bundles.OUT / "cohort-inputs"


def write_subjects(cache: Path, tree: Path, n: int, shape: tuple[int, int, int]) -> list[tuple[str, Path]]:
    """A BIDS-like tree of sub-01 .. sub-N (tree/sub-XX/dwi/sub-XX_peaks.nii.gz), seeds 1..N, hard links to
    volumes written once into ``cache`` and reused by later runs."""
    from export.demo_input import write_demo_peaks

    subjects = []
    for i in range(1, n + 1):
        sid = f"sub-{i:0{max(2, len(str(n)))}d}"
        source = cache / f"peaks-seed{i}.nii.gz"
        if not source.is_file():
            log(f"[bench] writing {source}")
            os.replace(write_demo_peaks(cache / f"partial-seed{i}.nii.gz", shape, seed=i), source)
        path = tree / sid / "dwi" / f"{sid}_peaks.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, path)
        except OSError:
            shutil.copyfile(source, path)
        subjects.append((sid, path))
    return subjects


def shell_loop(subjects: list[tuple[str, Path]], out: Path, run_args: list[str]) -> dict[str, Any]:
    """The baseline: a bash loop, one `python -m runtime.run` per subject, sequential, the backend's default
    threads. Peak RSS per subject from each run's --report (the process's own VmHWM)."""
    (out / "reports").mkdir(parents=True, exist_ok=True)
    lines = ["set -e", f"cd {shlex.quote(str(REPO))}"]
    for sid, peaks in subjects:
        lines.append(shlex.join(python_module("runtime.run", [str(peaks), "-o", str(out / sid), *run_args,
                                                               "--quiet", "--report",
                                                               str(out / "reports" / f"{sid}.json")])))
    script = out / "loop.sh"
    script.write_text("\n".join(lines) + "\n")
    run = timed(["bash", str(script)])
    reports = {p.stem: json.loads(p.read_text()) for p in sorted((out / "reports").glob("*.json"))}
    peaks = {sid: r["peak_rss_mb"] for sid, r in reports.items()}
    totals = [r["timings_s"]["total"] + r["timings_s"].get("open_backend", 0.0) for r in reports.values()]
    run.update(workers=1, threads_per_worker="default", done=len(reports), script=str(script),
               peak_rss_mb_per_worker=peaks, peak_rss_mb_max=max(peaks.values()) if peaks else None,
               subject_seconds_mean=round(sum(totals) / len(totals), 3) if totals else None,
               network_seconds_mean=mean_of([r["timings_s"]["network"] for r in reports.values()]),
               backend=next(iter(reports.values()))["backend"] if reports else None)
    return run


def cohort(inputs: Path, out: Path, run_args: list[str], extra: list[str]) -> dict[str, Any]:
    run = timed(python_module("runtime.cohort", [str(inputs), "-o", str(out), *run_args, *extra]))
    run.update(plan(run["stdout"]))
    summary = rows_summary(table_rows(out))
    run.update({k: v for k, v in summary.items() if k != "rows"})
    records = [read_done_record(folder) or {} for folder in sorted(out.iterdir()) if folder.is_dir()]
    run["network_seconds_mean"] = mean_of([r["timings_s"]["network"] for r in records if "timings_s" in r])
    return run


def mean_of(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 1) if values else None


LOOP = "shell loop: runtime.run per subject"


def configurations(names: list[str], cores: int, memory: int | None) -> list[tuple[str, list[str] | None]]:
    """(name, runtime.cohort options, None for the shell loop) for ``loop``, ``WxT`` and ``default``, in the
    order given; ``default`` is folded into the ``WxT`` that the runner's default rule gives on this host."""
    threads = default_threads(cores)
    default = f"{default_workers(cores, memory / 2**30 if memory else None, threads)}x{threads}"
    configs: list[tuple[str, list[str] | None]] = []
    for name in names:
        if name == "loop":
            configs.append((LOOP, None))
        elif name == "default" and default in names:
            continue
        elif name == "default":
            configs.append(("cohort (default workers)", []))
        elif not re.fullmatch(r"\d+x\d+", name):
            raise SystemExit(f"--configs: {name!r} is not loop, default or WxT (e.g. 1x2)")
        else:
            workers, _, per = name.partition("x")
            options = ["--workers", workers, "--threads-per-worker", per]
            folded = name == default and "default" in names  # the default rule gives this setting: run it once
            configs.append((f"cohort {'default = ' if folded else ''}{' '.join(options)}", options))
    return configs


def run(args) -> tuple[dict[str, Any], str, dict[str, Path]]:
    begin = bundles.start_run("cohort-throughput", args.out, args.bundle, bundles.export_args(
        args.seed, args.slice_size, args.batch_size, args.formats, "cpu"), log=log)
    t0, started, outdir, machine, path, how, manifest = (begin.t0, begin.started, begin.outdir, begin.machine,
                                                         begin.path, begin.how, begin.manifest)
    backend, device = choose(args.backend, args.device, manifest)
    shape = tuple(int(s) for s in args.shape.split(","))
    inputs = outdir / "inputs"
    shutil.rmtree(inputs, ignore_errors=True)
    subjects = write_subjects(INPUTS / "x".join(map(str, shape)), inputs, args.subjects, shape)
    run_args = ["--artifacts", str(path), "--backend", args.backend, "--device", args.device]
    cores = available_cores()
    configs = configurations(args.configs.split(","), cores, available_memory_bytes())
    runs: dict[str, dict[str, Any]] = {}
    for i, (name, extra) in enumerate(configs):
        out = outdir / f"run-{i}"
        shutil.rmtree(out, ignore_errors=True)
        log(f"[bench] {name}: {len(subjects)} subjects ...")
        result = shell_loop(subjects, out, run_args) if extra is None else cohort(inputs, out, run_args, extra)
        result["error"] = failure(result) or (None if result.get("done") == len(subjects) else
                                              f"{result.get('done')} of {len(subjects)} subjects done")
        result["subjects_per_hour"] = round(3600 * len(subjects) / result["wall_s"], 2)
        runs[name] = {k: v for k, v in result.items() if k not in ("stdout", "stderr")}
        runs[name]["stderr_tail"] = result["stderr"][-1500:] if result["error"] else ""
        log(f"[bench] {name}: {result['wall_s']:.1f} s {result['error'] or ''}")
    loop = runs.get(LOOP)
    for r in runs.values():
        r["speed_vs_shell_loop"] = round(loop["wall_s"] / r["wall_s"], 3) if loop else None
        r["cpu_use"] = round(r["cpu_s"] / (r["wall_s"] * cores), 3)
    ceiling = round(loop["wall_s"] * cores / loop["cpu_s"], 3) if loop and loop["cpu_s"] else None
    result = {"mode": "cohort-throughput", "started": started, "machine": machine,
              "machine_kind": machine_kind(machine), "bundle": {**bundles.describe(manifest), "how": how},
              "backend": {"requested": args.backend, "chosen": backend, "device": device,
                          "detail": loop.get("backend") if loop else None},
              "subjects": {"n": len(subjects), "shape": list(shape), "root": str(inputs),
                           "how": "export.demo_input.write_demo_peaks, seeds 1..N", "cache": str(INPUTS)},
              "runs": runs, "cores": cores, "shell_loop_cpu_ceiling": ceiling,
              "wall_s": round(time.perf_counter() - t0, 1)}
    text = markdown(result)
    return result, text, write_json_md(result, text, outdir)


def markdown(result: dict[str, Any]) -> str:
    m, b, s, be = result["machine"], result["bundle"], result["subjects"], result["backend"]
    detail = be.get("detail") or {}
    lines = [f"**cohort-throughput** benchmark, {result['started']}, {result['wall_s']:.0f} s. {m['cpu_model']}, "
             f"{m['usable_cpus']} CPUs, {m['ram_gib']} GiB; load average at start {m['load_average_at_start']}.",
             f"Bundle {b['bundle_id']} ({b['task']}, S={b['slice_size']}, B={b['batch_size']}, "
             f"{b['weights']['source']}); backend {be['chosen']} {detail.get('version', '')} on {be['device']} "
             f"({detail.get('detail', '')}). {s['n']} synthetic subjects of {'x'.join(map(str, s['shape']))} "
             "voxels (export.demo_input), each configuration in a fresh output folder, in the order listed.", "",
             "| configuration | workers x threads | wall s | subjects/hour | speed vs shell loop | mean s/subject "
             f"(in worker) | mean network s | CPU s | CPU use of {result['cores']} cores | peak RSS per worker MB "
             "(max) | load before |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in result["runs"].items():
        if r.get("error"):
            lines.append(f"| {name} | failed: {r['error'][:150]} | | | | | | | | | |")
            continue
        lines.append(f"| {name} | {r.get('workers', '?')} x {r.get('threads_per_worker', '?')} | {r['wall_s']:.1f} | "
                     f"{r['subjects_per_hour']:.1f} | "
                     f"{'-' if r['speed_vs_shell_loop'] is None else format(r['speed_vs_shell_loop'], '.2f') + 'x'} | "
                     f"{r.get('subject_seconds_mean') or '-'} | {r.get('network_seconds_mean') or '-'} | "
                     f"{r['cpu_s']:.0f} | {100 * r['cpu_use']:.0f}% | "
                     f"{r.get('peak_rss_mb_max') or '-'} | "
                     f"{(r.get('load_average_before') or ['-'])[0]} |")
    lines += ["", "wall: around the whole command (process start, imports, checksum verification, backend load, Dask "
              "start-up and shutdown included). subjects/hour = N x 3600 / wall. mean s/subject: cohort.csv "
              "`seconds` (a worker's first subject includes opening the pipeline) or, for the shell loop, each "
              "run's --report open_backend + total (every run opens the pipeline). mean network s: each subject's "
              "network stage (runtime.run's reports; the cohort's done-records). peak RSS: cohort.csv `peak_rss_mb` "
              "(the worker's VmHWM), largest over workers; shell loop: each run's --report. threads "
              "'default': the backend's own default (all cores). load before: 1-min load average as the "
              "configuration started. CPU s: user + system seconds of the command and all its processes; CPU use "
              "= CPU s / (wall x cores)."]
    if result.get("shell_loop_cpu_ceiling"):
        lines += ["", f"Ceiling: the shell loop kept {result['cores']} cores "
                  f"{100 / result['shell_loop_cpu_ceiling']:.0f}% busy, so a runner doing the same CPU work can be at "
                  f"most **{result['shell_loop_cpu_ceiling']:.2f}x** faster on this machine (it can only save the "
                  "work of process start and backend load per subject, and fill the idle share)."]
    return "\n".join(lines) + "\n"


def main(args) -> int:
    result, text, paths = run(args)
    return finish(text, paths, any(r.get("error") for r in result["runs"].values()))
