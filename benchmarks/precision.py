"""python -m benchmarks precision --bundle B: every precision of a bundle as a row, against fp32 on the same backend.

Batch rows: ms/slice (median of timed batches after a warm-up), GFLOP/s, speed vs fp32, max abs drift and mask
flips (p > 0.5) vs fp32 on the same batches. Subject rows: one full subject through TractSegPipeline (wall,
network) and the Dice per bundle of its masks vs the fp32 masks (min, mean, worst). fp16 rows only where CUDA
runs them; bf16 rows only on a CPU with AVX512_BF16 or AMX (elsewhere OpenVINO would emulate it).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bundle import start_run
from benchmarks.flops import gflops
from benchmarks.report import write_json_md


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", type=Path, required=True, help="a bundle exported with --precisions ...")
    p.add_argument("--subject", help="peaks file of the full-subject rows (default: upstream's example peaks when "
                                     "present, else a synthetic one as the export uses)")
    p.add_argument("--threads", type=int, help="backend threads (default: the backend's own)")
    p.add_argument("--batches", type=int, default=5, help="timed batches per row")
    p.add_argument("--backends", help="comma list: only these backends (default: onnxruntime and openvino)")
    p.add_argument("--out", type=Path, help="results folder (default benchmarks/out/<timestamp>-precision)")


def runnable(manifest, device: str, only: set[str] | None = None) -> list[tuple[Any, str, str]]:
    from runtime.network.backends import can_run_cuda, is_installed
    from runtime.errors import BackendError
    from runtime.network.precision import check_host

    rows = []
    for artifact in manifest.plain_artifacts:  # not the dropout model: another signature
        for backend in artifact.backends:
            on = "cuda" if artifact.precision == "fp16" else device
            if backend not in (only or {"onnxruntime", "openvino"}) or not is_installed(backend):
                continue
            if on == "cuda" and not can_run_cuda(backend):
                continue
            try:
                check_host(artifact.precision, on)
            except BackendError:
                continue
            if on in artifact.platforms:
                rows.append((artifact, backend, on))
    return rows


def batch_row(run, batches: list[np.ndarray], n_classes: int, size: int, timed: int) -> dict[str, Any]:
    outputs = [np.asarray(run(b)) for b in batches]  # also the warm-up
    times = []
    for _ in range(timed):
        t0 = time.perf_counter()
        run(batches[0])
        times.append(time.perf_counter() - t0)
    seconds = float(np.median(times))
    slices = len(batches[0])
    return {"ms_per_slice": 1000 * seconds / slices, "gflops": gflops(n_classes, size, slices, seconds),
            "outputs": outputs}


def main(args: argparse.Namespace) -> int:
    from export.precisions import dice_per_bundle, fidelity_subject
    from export.sample_inputs import check_batches
    from runtime.network.backends import load_artifact
    from runtime.models.bundles import model_for
    from runtime.pipeline import TractSegPipeline

    start = start_run("precision", args.out, args.bundle, [])
    manifest = start.manifest
    size, n_classes = manifest.slice_size, manifest.n_classes
    batches = check_batches(manifest.batch_size, size, seed=1)
    subject, subject_name = (args.subject, Path(args.subject).name) if args.subject else fidelity_subject(size)
    model = model_for(manifest.task, manifest.tract_definition)
    rows, fp32 = [], {}
    only = set(args.backends.split(",")) if args.backends else None
    for artifact, backend, device in runnable(manifest, "cpu", only):
        print(f"[bench] {artifact.id} ({artifact.precision}) on {backend}/{device} ...", flush=True)
        run = load_artifact(backend, manifest.verified_path(artifact), artifact, device, args.threads)
        row = {"artifact": artifact.id, "precision": artifact.precision, "backend": backend, "device": device,
               "detail": run.detail, **batch_row(run, batches, n_classes, size, args.batches)}
        t0 = time.perf_counter()
        seg = TractSegPipeline(model, manifest, artifact, run, args.threads).predict(subject)
        masks = seg.masks()
        row.update(subject=subject_name, subject_wall_s=time.perf_counter() - t0,
                   subject_network_s=seg.timings["network"])
        reference = fp32.get(backend)
        if artifact.precision == "fp32":
            fp32[backend] = {"row": row, "masks": masks}
        elif reference is not None:
            ref_out = reference["row"]["outputs"]
            diff = max(float(np.abs(o - r).max()) for o, r in zip(row["outputs"], ref_out))
            flips = float(np.mean([((o > 0.5) != (r > 0.5)).mean() for o, r in zip(row["outputs"], ref_out)]))
            dice = dice_per_bundle(masks, reference["masks"])
            row.update(speed_vs_fp32=row["ms_per_slice"] / reference["row"]["ms_per_slice"],
                       network_vs_fp32=row["subject_network_s"] / reference["row"]["subject_network_s"],
                       max_abs_vs_fp32=diff, mask_flips_vs_fp32=flips, dice_min=float(dice.min()),
                       dice_mean=float(dice.mean()), worst_bundle=manifest.bundles[int(np.argmin(dice))])
        rows.append(row)
        print(f"[bench]   {row['ms_per_slice']:.1f} ms/slice, network {row['subject_network_s']:.1f} s", flush=True)
    for row in rows:
        row.pop("outputs")
    result = {"mode": "precision", "started": start.started, "machine": start.machine, "bundle": str(start.path),
              "threads": args.threads, "rows": rows}
    text = markdown(result)
    paths = write_json_md(result, text, start.outdir)
    print(text)
    print(f"[bench] results: {paths['json']}")
    return 0


def markdown(result: dict[str, Any]) -> str:
    def f(value, spec):
        return "" if value is None else format(value, spec)

    lines = [f"Precisions on {result['machine']['cpu_model']} ({result['machine']['usable_cpus']} CPUs usable, "
             f"threads {result['threads'] or 'backend default'}), bundle {result['bundle']}", "",
             "| artifact | precision | backend | ms/slice | GFLOP/s | x fp32 (batch) | subject network s | "
             "x fp32 (network) | max abs vs fp32 | mask flips | Dice min | Dice mean | worst bundle |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['artifact']} | {r['precision']} | {r['backend']}/{r['device']} | "
                     f"{r['ms_per_slice']:.1f} | {r['gflops']:.0f} | {f(r.get('speed_vs_fp32'), '.2f')} | "
                     f"{r['subject_network_s']:.1f} | {f(r.get('network_vs_fp32'), '.2f')} | "
                     f"{f(r.get('max_abs_vs_fp32'), '.2e')} | {f(r.get('mask_flips_vs_fp32'), '.2e')} | "
                     f"{f(r.get('dice_min'), '.4f')} | {f(r.get('dice_mean'), '.4f')} | {r.get('worst_bundle', '')} |")
    return "\n".join(lines) + "\n"
