"""One benchmark run, quick or full: bundle -> runners -> latency + drift -> (full) subjects -> results."""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import bundle as bundles
from benchmarks import latency, runners, subject
from benchmarks.drift import gate, load_masks, mask_agreement, probability_drift
from benchmarks.flops import macs_per_slice
from benchmarks.machine import load_average, machine_kind
from benchmarks.report import publish, write_all
from runtime.network.backends import BACKENDS


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args) -> tuple[dict[str, Any], dict[str, Path]]:
    begin = bundles.start_run(args.mode, args.out, args.bundle, bundles.export_args(
        args.seed, args.slice_size, args.batch_size, args.formats, args.platforms), log=log)
    t0, started, outdir, machine, path, how, manifest = (begin.t0, begin.started, begin.outdir, begin.machine,
                                                         begin.path, begin.how, begin.manifest)
    seed, C, S, B = bundles.random_seed(manifest), manifest.n_classes, manifest.slice_size, manifest.batch_size
    from export.sample_inputs import check_batches

    batches = check_batches(B, S, seed=args.input_seed)
    wanted = args.backends.split(",") if args.backends else None
    rows = [runners.live_runner(seed, C)] + runners.artifact_runners(manifest, wanted)
    if not args.no_upstream:
        rows.append(runners.upstream_runner(seed, C))
    for row in rows:
        if row.kind == "artifact" and not row.skipped:
            runners.open_artifact(manifest, row)
    active = [r for r in rows if not r.skipped]
    plan = latency.QUICK if args.mode == "quick" else latency.FULL
    if args.per_row_s:
        plan = latency.Plan(**{**plan.__dict__, "budget_s": args.per_row_s})
    state = latency.measure(active, batches, plan, log=log)
    reference = state[rows[0].id]["outputs"]
    records = []
    for row in rows:
        record = row.record()
        if row.id in state:
            record["latency"] = latency.summary(state[row.id], B, C, S)
            record["drift"] = None if row is rows[0] else probability_drift(state[row.id]["outputs"], reference)
        records.append(record)
    failures = gate(records, args.tolerance)
    upstream = next((r for r in records if r["id"].startswith(runners.UPSTREAM_ID) and r.get("drift")), None)
    result: dict[str, Any] = {
        "mode": args.mode, "started": started, "machine": machine, "machine_kind": machine_kind(machine),
        "bundle": {**bundles.describe(manifest), "how": how}, "gmac_per_slice": macs_per_slice(C, S) / 1e9,
        "check_slices": sum(len(b) for b in batches), "check_input_seed": args.input_seed,
        "plan": plan.__dict__, "rows": records, "upstream_vs_live": upstream["drift"] if upstream else None,
        "gate": {"tolerance": args.tolerance, "passed": not failures, "failures": failures,
                 "failing_rows": [f.split(":")[0] for f in failures]},
    }
    state = None  # drop the kept outputs
    runners.close([r for r in rows if r is not rows[0]])
    if args.mode == "full":
        result["subject"] = full_subject(args, manifest, path, rows[0], records, outdir, t0)
    result["load_average_at_end"] = load_average()
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    paths = write_all(result, outdir)
    if args.publish:
        paths.update({f"published_{k}": v for k, v in publish(paths, result["machine_kind"]).items()})
    return result, paths


def full_subject(args, manifest, bundle_dir: Path, live: runners.Runner, records: list[dict[str, Any]],
                 outdir: Path, t0: float) -> dict[str, Any]:
    shape = tuple(args.subject_shape)
    work = outdir / "subject"
    peaks = subject.make_input(work, shape, seed=0)
    log(f"[bench] full subject {shape}: live JAX model through the runtime pipeline (reference masks)")
    load = load_average()
    ref = subject.run_in_process(peaks, manifest, live.call, work / "live-jax")
    ref["load_average_before"] = load
    ref["how"] = "live JAX model, runtime pipeline in-process (the reference)"
    reference = load_masks(work / "live-jax", manifest.bundles)
    runs: dict[str, dict[str, Any]] = {"live-jax (reference)": ref}
    n_batches = ref["slices"]["batches"]
    overheads: list[float] = []
    todo = []  # (estimate s, name, kind, record)
    for record in records:
        lat = record.get("latency")
        if not lat or record["backend"] not in BACKENDS or not record["selected_by_runtime"]:
            continue
        todo.append((lat["median_s"] * n_batches + 30, f"{record['backend']}/{record['device']} "
                     f"({record['artifact']})", "cli", record))
    upstream = next((r for r in records if r["id"].startswith(runners.UPSTREAM_ID) and r.get("latency")), None)
    if upstream and (manifest.task, manifest.tract_definition, manifest.slice_size) == \
            ("tract_segmentation", "TractQuerier+", 144):
        per_slice = upstream["latency"]["median_s"] / upstream["latency"]["batch_size"]
        todo.append((per_slice * 3 * manifest.slice_size + 40, "upstream torch (run_tractseg, batch 1)",
                     "upstream", upstream))
    for estimate, name, kind, record in sorted(todo, key=lambda t: t[0]):
        elapsed = time.perf_counter() - t0
        over_budget = elapsed + estimate > 60 * args.budget_min
        if over_budget and kind == "cli":
            overhead = statistics.median(overheads) if overheads else ref["wall_s"] - ref["stages_s"]["network"]
            runs[name] = subject.extrapolate(record["latency"]["median_s"], n_batches, overhead,
                                             f"{n_batches} batches x {record['latency']['median_s']:.3f} s "
                                             f"median batch latency + median non-network time of measured runs; "
                                             f"a measured run (~{estimate / 60:.0f} min) did not fit the "
                                             f"{args.budget_min} min budget")
            log(f"[bench] {name}: EXTRAPOLATED ({runs[name]['wall_s']:.0f} s)")
            continue
        if over_budget:
            runs[name] = {"measured": False, "error": f"skipped: ~{estimate / 60:.0f} min exceeds the budget"}
            continue
        log(f"[bench] {name}: full subject (~{estimate:.0f} s expected), load {load_average()}")
        if kind == "cli":
            run = subject.run_cli(peaks, bundle_dir, record["backend"], record["device"], work / record["backend"])
            if (run.get("stages_s") or {}).get("network") is not None:
                overheads.append(run["wall_s"] - run["stages_s"]["network"])
        else:
            run = subject.run_upstream(peaks, bundles.random_seed(manifest), manifest.n_classes, work / "upstream")
        if run.get("measured"):
            run["agreement"] = mask_agreement(load_masks(Path(run["outdir"]), manifest.bundles), reference)
        runs[name] = run
        log(f"[bench] {name}: {run.get('wall_s', '-')} s {run.get('error', '')}")
    return {"input": {"path": str(peaks), "shape": list(shape), "seed": 0}, "runs": runs,
            "reference": "live JAX model (jit) as the slice function of the runtime's own pipeline, in-process"}
