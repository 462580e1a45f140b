"""python -m benchmarks winograd-engines: engines that fuse Winograd into their kernels (IREE's
convert-conv2d-to-winograd pass, ncnn, TVM) against ONNX Runtime's direct convolution, on the real network
(issue 31). One bundle (seeded random weights, S=144, batch 4, fp32, benchmarks/bundle.py); every row is an
engine in its own worker process (benchmarks/engine_worker.py; ncnn and TVM from another venv's python,
--engine-python), all loaded at once and timed round-robin (row 1, row 2, ..., repeated; each row's median over
rounds); drift = max abs probability difference from the live JAX model on the two check batches; memory = the
worker's peak RSS. Rows whose engine is not installed are skipped with the reason. Results:
benchmarks/results/winograd-engines-<cpu>-<timestamp>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bundle import OUT, REPO, cached_bundle, export_args
from benchmarks.winograd_engine_builds import ROWS, build_row

RESULTS = Path(__file__).resolve().parent / "results"


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", default=",".join(ROWS),
                   help=f"comma list, in timing order (default all: {','.join(ROWS)})")
    p.add_argument("--engine-python", default=os.environ.get("TRACTSEG_ENGINE_PYTHON", sys.executable),
                   help="python of the venv with ncnn + pnnx and apache-tvm (default $TRACTSEG_ENGINE_PYTHON or "
                        "this python); rows whose engine it lacks are skipped")
    p.add_argument("--threads", type=int, default=2, help="threads of every engine (IREE: task topology groups)")
    p.add_argument("--rounds", type=int, default=7, help="round-robin timing rounds")
    p.add_argument("--slow-s", type=float, default=30.0,
                   help="a row whose check batch took longer than this many seconds is timed in round 1 only")
    p.add_argument("--slice-size", type=int, default=144)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="random weights seed of the bundle")
    p.add_argument("--out", type=Path,
                   help="results json (default benchmarks/results/winograd-engines-<cpu>-<time>.json)")


class Worker:
    def __init__(self, python: str, engine: str, args: dict, threads: int):
        env = {**os.environ, "PYTHONPATH": str(REPO), "TVM_NUM_THREADS": str(threads),
               "OMP_NUM_THREADS": str(threads)}
        self.proc = subprocess.Popen([python, "-m", "benchmarks.engine_worker", "serve", engine, json.dumps(args)],
                                     cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.hello = self._read()

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            return {"ok": False, "skip": f"worker exited with status {self.proc.wait()}"}
        return json.loads(line)

    def ask(self, **request) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = self._read()
        if "skip" in answer:
            raise RuntimeError(answer["skip"])
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def references(args: argparse.Namespace, n_classes: int, work: Path, log=print) -> list[tuple[Path, Path]]:
    """The check batches (export.sample_inputs, seed 1 as `benchmarks quick`) and the live JAX model's output."""
    from benchmarks.runners import JaxSlices
    from export.sample_inputs import check_batches

    live = JaxSlices(args.seed, n_classes)
    pairs = []
    for i, batch in enumerate(check_batches(args.batch_size, args.slice_size, seed=1)):
        pairs.append((work / f"check{i}.npy", work / f"live{i}.npy"))
        np.save(pairs[-1][0], batch)
        np.save(pairs[-1][1], np.asarray(live(batch), dtype=np.float32))
    log(f"[bench] live JAX reference on {len(pairs)} check batches of {args.batch_size}")
    return pairs


def drift(outputs: list[Path], pairs: list[tuple[Path, Path]]) -> dict[str, Any]:
    from export.verify import drift_figures

    figures = drift_figures((np.load(o), np.load(ref)) for o, (_, ref) in zip(outputs, pairs))
    return {"max_abs": figures["max_abs"], "mean_abs": figures["mean_abs"]}


def measure(args: argparse.Namespace, log=print) -> dict[str, Any]:
    from runtime.models.manifest import load_manifest

    bundle, how = cached_bundle(export_args(args.seed, args.slice_size, args.batch_size, "onnx,iree,stablehlo",
                                            "cpu"), log=log)
    manifest = load_manifest(bundle)
    work = OUT / "winograd-engines" / bundle.name
    work.mkdir(parents=True, exist_ok=True)
    pairs = references(args, manifest.n_classes, work, log)
    rows, workers = [], {}
    for name in [r for r in args.rows.split(",") if r]:
        row = {"row": name, **ROWS[name]}
        rows.append(row)
        try:
            row["build"], engine_args = build_row(name, manifest, work, args, log=log)
        except RuntimeError as error:  # not installed / conversion failed: a row with its reason
            row["skipped"] = " ".join(str(error).split())[:400]
            log(f"[bench] {name}: skipped: {row['skipped']}")
            continue
        python = sys.executable if row["engine"] in ("onnxruntime", "iree") else args.engine_python
        worker = Worker(python, row["engine"], {**engine_args, "threads": args.threads}, args.threads)
        if not worker.hello.get("ok"):
            row["skipped"] = worker.hello.get("skip")
            log(f"[bench] {name}: skipped: {row['skipped']}")
            worker.close()
            continue
        row.update(version=worker.hello["version"], detail=worker.hello["detail"], load_s=worker.hello["load_s"])
        outputs = [work / f"{name}-out{i}.npy" for i in range(len(pairs))]
        row["check_s"] = [round(worker.ask(op="run", input=str(i), output=str(o))["s"], 3)
                          for (i, _), o in zip(pairs, outputs)]  # also the warm-up
        row["drift_vs_live"] = drift(outputs, pairs)
        workers[name] = worker
        log(f"[bench] {name}: {row['version']}; check batches {row['check_s']} s; drift "
            f"{row['drift_vs_live']['max_abs']:.2e}")
    load_before = [round(x, 2) for x in os.getloadavg()]
    log(f"[bench] timing {len(workers)} rows x {args.rounds} rounds, round-robin; load average {load_before}")
    seconds: dict[str, list[float]] = {name: [] for name in workers}
    slow = {name for name in workers if max(next(r for r in rows if r["row"] == name)["check_s"]) > args.slow_s}
    for k in range(args.rounds):
        for name, worker in workers.items():
            if k == 0 or name not in slow:
                seconds[name].append(worker.ask(op="time", input=str(pairs[0][0]))["s"])
        log(f"[bench] round {k + 1}: " + ", ".join(f"{n} {1e3 * s[-1] / args.batch_size:.0f}" for n, s in
                                                   seconds.items()) + " ms/slice")
    load_after = [round(x, 2) for x in os.getloadavg()]
    baseline = float(np.median(seconds["onnxruntime-direct"])) if seconds.get("onnxruntime-direct") else None
    for row in rows:
        name = row["row"]
        if name not in workers:
            continue
        times = seconds[name]
        median = float(np.median(times))
        row.update(ms_per_slice=1e3 * median / args.batch_size, rounds=len(times),
                   ms_per_slice_best=1e3 * min(times) / args.batch_size,
                   ms_per_slice_all=[round(1e3 * t / args.batch_size, 1) for t in times],
                   speedup_vs_onnxruntime=baseline / median if baseline else None,
                   peak_rss_mib=workers[name].ask(op="rss")["max_rss_mib"])
        workers[name].close()
    return {"bundle": {"dir": str(bundle), "how": how, "bundle_id": manifest.bundle_id, "n_classes":
                       manifest.n_classes}, "rows": rows, "load_average_timing_start": load_before,
            "load_average_timing_end": load_after}


def markdown(result: dict[str, Any]) -> str:
    lines = [("| row | engine | ms/slice (median) | best round | x ONNX Runtime direct (speed, medians) | "
              "drift vs live JAX | peak RSS MiB | build / convert s |"), "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        build = (r.get("build") or {}).get("build_s", "")
        if r.get("skipped"):
            lines.append(f"| {r['row']} | {r['what']} | skipped: {r['skipped']} | | | | | {build} |")
            continue
        lines.append(f"| {r['row']} | {r['version']}: {r['what']} | {r['ms_per_slice']:.1f} | "
                     f"{r['ms_per_slice_best']:.1f} | "
                     f"{r['speedup_vs_onnxruntime']:.2f} | {r['drift_vs_live']['max_abs']:.1e} | "
                     f"{r['peak_rss_mib']:.0f} | {build} |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from benchmarks.machine import machine_info, machine_kind

    machine = machine_info()
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"[bench] winograd-engines: {machine['cpu_model']}, load average {machine['load_average_at_start']}")
    t0 = time.perf_counter()
    result = {"mode": "winograd-engines", "started": started, "machine": machine,
              "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    result.update(measure(args))
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out = args.out or RESULTS / f"winograd-engines-{machine_kind(machine)}-{started.replace(':', '')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result))
    print(f"[bench] load average: start {machine['load_average_at_start']}, timing "
          f"{result['load_average_timing_start']} -> {result['load_average_timing_end']}, end "
          f"{result['load_average_at_end']}")
    print(f"[bench] results: {out}")
    return 0
