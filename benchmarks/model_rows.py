"""python -m benchmarks.model_rows BUNDLE...: latency and drift rows for any bundle, TOM's four parts and
dm_regression included, without JAX: per model (a TOM bundle: per part) and per installed CPU backend, the batch
latency (median and spread of ``--repeats`` timed runs of the bundle's self-check batch after one warm-up) and the
drift against the live JAX model: the max abs difference from the reference outputs the export computed with the
live model for that batch (stored in the bundle, every ``stride``-th pixel), beside the drift the export recorded
on its own check slices. Raw outputs for TOM / dm_regression, probabilities otherwise.

    python -m benchmarks.model_rows /tmp/tom-bench/tom-bundle B_DM [--repeats 10] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import load_average, machine_info
from runtime.models.manifest import Manifest, load_manifest
from runtime.network.backends import BACKENDS, is_installed, open_backend
from runtime.network.precision import recorded_drift


def model_rows(manifest: Manifest, label: str, backends: list[str], repeats: int) -> list[dict[str, Any]]:
    check = manifest.self_check
    if check is None:
        raise SystemExit(f"{manifest.root}: no self-check batch (exported before it existed)")
    with np.load(manifest.root / check.path, allow_pickle=False) as stored:
        batch, reference = stored["input"].astype(np.float32), stored["reference"]
    rows = []
    for name in backends:
        artifact = manifest.find(name, "cpu")
        if artifact is None:
            continue
        backend = open_backend(name, "cpu", manifest)
        got = np.asarray(backend(batch), dtype=np.float32)  # warm-up, and the drift
        drift = float(np.abs(got[:, :, ::check.stride, ::check.stride] - reference).max())
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            backend(batch)
            seconds.append(time.perf_counter() - started)
        rows.append({"model": label, "task": manifest.task, "n_classes": manifest.n_classes,
                     "slice_size": manifest.slice_size, "batch_size": manifest.batch_size, "backend": name,
                     "artifact": artifact.id, "median_ms_per_batch": round(1e3 * statistics.median(seconds), 1),
                     "min_ms_per_batch": round(1e3 * min(seconds), 1),
                     "max_ms_per_batch": round(1e3 * max(seconds), 1),
                     "ms_per_slice": round(1e3 * statistics.median(seconds) / manifest.batch_size, 1),
                     "drift_vs_live_jax_check_batch": drift,
                     "export_recorded_drift": recorded_drift(artifact, name, "cpu"),
                     "linear_outputs": manifest.model.linear})
        print(f"{label:<24} {name:<12} {rows[-1]['median_ms_per_batch']:>8.1f} ms/batch of {manifest.batch_size} "
              f"({rows[-1]['min_ms_per_batch']:.1f}-{rows[-1]['max_ms_per_batch']:.1f})  drift {drift:.2e} "
              f"(export: {rows[-1]['export_recorded_drift']:.2e})", flush=True)
        del backend
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.model_rows", description=__doc__.splitlines()[0])
    p.add_argument("bundles", nargs="+", type=Path)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--backends", default="onnxruntime,openvino")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b in BACKENDS and is_installed(b)]
    result: dict[str, Any] = {"machine": machine_info(), "load_average_at_start": load_average(), "rows": []}
    for path in args.bundles:
        manifest = load_manifest(path)
        models = [(f"{manifest.task} part{i + 1}", part) for i, part in enumerate(manifest.parts)] or \
            [(f"{manifest.task}/{manifest.tract_definition}", manifest)]
        for label, model in models:
            result["rows"].extend(model_rows(model, label, backends, args.repeats))
    result["load_average_at_end"] = load_average()
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
