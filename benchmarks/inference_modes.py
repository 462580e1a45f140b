"""python -m benchmarks.inference_modes: what ``--single_orientation``, ``--uncertainty`` and ``--super_resolution``
cost beside the default run, side by side in one run on one machine.

Each mode is ``python -m runtime.run PEAKS --artifacts BUNDLE --backend B --report R --quiet`` as a user runs it
(the same input, bundle and backend), one after the other, ``--repeats`` times, alternating modes. Reported per
mode: wall time of the command, the network's and the whole run's time from the run report, peak RSS (the run
report's ``ru_maxrss``: this parent process stays small, so what the child inherits across fork + exec is
negligible), slices and network calls. ``--uncertainty`` runs the network 30 times per slice batch; at S=144 a
full 3-orientation uncertainty run takes ~30x the default's network time, so ``--modes`` picks what to time
(default: default, single_orientation, uncertainty+single_orientation, super_resolution; add ``uncertainty`` for
the full one). ``--super_resolution`` on the 2.5 mm example makes an HCP-size input (146 x 174 x 146).

Prints a table and writes benchmarks/results/inference-modes-<machine>.json (``--out``).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bundle import OUT, cached_bundle, export_args
from benchmarks.machine import load_average, machine_info, machine_kind

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
EXAMPLE = REPO.parent / "shared" / "data" / "tractseg_example_peaks_2.5mm.nii.gz"
MODES = {
    "default": [],
    "single_orientation": ["--single_orientation"],
    "uncertainty+single_orientation": ["--uncertainty", "--single_orientation"],
    "uncertainty": ["--uncertainty"],
    "super_resolution": ["--super_resolution"],
}


def run_mode(peaks: Path, bundle: Path, backend: str, flags: list[str], work: Path) -> dict:
    report = work / "report.json"
    cmd = [sys.executable, "-m", "runtime.run", str(peaks), "--artifacts", str(bundle), "--backend", backend,
           "-o", str(work / "out"), "--force", "--quiet", "--report", str(report), *flags]
    load = load_average()
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {done.returncode}: {done.stderr.strip()[-500:]}")
    rep = json.loads(report.read_text())
    return {"wall_s": round(wall, 2), "network_s": rep["timings_s"].get("network"),
            "total_s": rep["timings_s"].get("total"), "peak_rss_mb": rep.get("peak_rss_mb"),
            "slices": rep.get("slices"), "load_average_before": load}


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.inference_modes", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, help="a bundle with the dropout model (default: build S=--slice-size)")
    p.add_argument("--slice-size", type=int, default=144)
    p.add_argument("--peaks", type=Path, default=EXAMPLE, help="the input (default: the shared example peaks)")
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--modes", default="default,single_orientation,uncertainty+single_orientation,super_resolution",
                   help=f"comma list of {', '.join(MODES)}")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        p.error(f"unknown mode {unknown[0]!r} (choose from {', '.join(MODES)})")
    if not args.peaks.is_file():
        p.error(f"{args.peaks}: no such input (--peaks)")
    bundle = args.bundle or cached_bundle(export_args(0, args.slice_size, 4, "onnx", "cpu"), OUT / "bundles")[0]
    info = machine_info()
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as work:
        for _ in range(args.repeats):
            for mode in modes:
                runs[mode].append(run_mode(args.peaks, bundle, args.backend, MODES[mode], Path(work)))
                print(f"[inference-modes] {mode}: {runs[mode][-1]}", flush=True)
    base = median([r["network_s"] for r in runs[modes[0]]])
    print(f"\nCPU {info['cpu_model']} ({info['usable_cpus']} cores), backend {args.backend}, bundle {bundle}, "
          f"input {args.peaks.name}\n")
    print(f"| mode | wall s | network s | network x {modes[0]} | total s | peak RSS MiB | slices run |")
    print("|---|---|---|---|---|---|---|")
    rows = {}
    for mode in modes:
        rs = runs[mode]
        row = {k: median([r[k] for r in rs]) for k in ("wall_s", "network_s", "total_s", "peak_rss_mb")}
        rows[mode] = row
        print(f"| {mode} | {row['wall_s']:.1f} | {row['network_s']:.1f} | {row['network_s'] / base:.2f} | "
              f"{row['total_s']:.1f} | {row['peak_rss_mb']:.0f} | {rs[0]['slices']['run']} |")
    out = args.out or RESULTS / f"inference-modes-{machine_kind(info)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": info, "bundle": str(bundle), "input": str(args.peaks),
                               "backend": args.backend, "runs": runs, "medians": rows,
                               "load_average_at_end": load_average()}, indent=1) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
