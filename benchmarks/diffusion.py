"""python -m benchmarks diffusion: the two peak engines of runtime.diffusion on a simulated multi-fibre phantom
(benchmarks/diffusion_phantom.py): first-peak angular error against the known directions (single-fibre voxels),
both peaks in crossing voxels, each engine against the other, the amplitude ratio, and each engine's wall time;
``--hcp`` adds one timed run of each engine on an HCP-size grid (145x174x145, fewer directions). Results:
benchmarks/out/<timestamp>-diffusion/results.{json,md}."""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.diffusion_phantom import Phantom, simulate
from runtime.diffusion import peaks_from_dwi


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shape", default="24,24,16", help="phantom X,Y,Z (default 24,24,16)")
    p.add_argument("--dirs", type=int, default=60, help="gradient directions, b=1000 (default 60)")
    p.add_argument("--b0s", type=int, default=5)
    p.add_argument("--snr", type=float, default=30.0, help="b0 SNR of the Rician noise (default 30)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="nthreads for both engines (default 2)")
    p.add_argument("--engines", default="mrtrix,dipy")
    p.add_argument("--hcp", action="store_true", help="also time each engine on a 145x174x145 phantom")
    p.add_argument("--hcp-dirs", type=int, default=32, help="directions of the HCP-size phantom (default 32)")
    p.add_argument("--out", type=Path, help="results folder (default benchmarks/out/<timestamp>-diffusion)")


def unit_peak(peaks: np.ndarray, k: int = 0) -> tuple[np.ndarray, np.ndarray]:
    v = np.nan_to_num(peaks[..., 3 * k:3 * k + 3])
    amp = np.linalg.norm(v, axis=-1)
    return v / np.maximum(amp, 1e-12)[..., None], amp


def angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(np.abs((a * b).sum(-1)), 0.0, 1.0)))


def stats(x: np.ndarray) -> dict[str, float]:
    return {"median": round(float(np.median(x)), 3), "p95": round(float(np.percentile(x, 95)), 3),
            "n": int(x.size)}


def accuracy(peaks: np.ndarray, ph: Phantom) -> dict[str, object]:
    single, cross = ph.n_fibres == 1, ph.n_fibres == 2
    d1, amp = unit_peak(peaks)
    d2, _ = unit_peak(peaks, 1)
    t1, t2 = ph.directions[..., 0, :], ph.directions[..., 1, :]
    # crossing voxels: each true fibre's error to the nearer of the two largest peaks
    e1 = np.minimum(angle_deg(d1, t1), angle_deg(d2, t1))[cross]
    e2 = np.minimum(angle_deg(d1, t2), angle_deg(d2, t2))[cross]
    return {"single_first_peak_deg": stats(angle_deg(d1, t1)[single]),
            "crossing_both_fibres_deg": stats(np.concatenate([e1, e2])),
            "single_amplitude_median": round(float(np.median(amp[single])), 4)}


def run_engine(engine: str, ph: Phantom, threads: int, workdir: Path) -> tuple[np.ndarray, dict[str, float], float]:
    start = time.perf_counter()
    result = peaks_from_dwi(ph.dwi, ph.bvals, ph.bvecs, ph.mask, engine=engine, nthreads=threads, workdir=workdir)
    wall = time.perf_counter() - start
    return result.load(), {k: round(v, 2) for k, v in result.timings.items()}, round(wall, 2)


def machine() -> dict[str, object]:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?")
    mrtrix = subprocess.run(["mrinfo", "-version"], capture_output=True, text=True).stdout.splitlines()[:1] \
        if shutil.which("mrinfo") else ["absent"]
    import dipy

    return {"cpu": model, "cores": len(__import__("os").sched_getaffinity(0)),
            "load_avg_start": list(__import__("os").getloadavg()), "mrtrix": mrtrix[0].strip("= "),
            "dipy": dipy.__version__}


def main(args: argparse.Namespace) -> int:
    out = args.out or Path("benchmarks/out") / f"{time.strftime('%Y%m%dT%H%M%S')}-diffusion"
    out.mkdir(parents=True, exist_ok=True)
    engines = [e for e in args.engines.split(",") if e]
    shape = tuple(int(v) for v in args.shape.split(","))
    report: dict[str, object] = {"machine": machine(), "phantom": {
        "shape": shape, "dirs": args.dirs, "b0s": args.b0s, "bval": 1000, "snr": args.snr, "seed": args.seed,
        "crossing_fraction": 0.3, "crossing_angle_deg": [60, 90]}, "threads": args.threads}
    ph = simulate(out / "phantom", shape=shape, n_dirs=args.dirs, n_b0=args.b0s, snr=args.snr, seed=args.seed,
                  margin=(2, 2, 2))
    peaks: dict[str, np.ndarray] = {}
    for engine in engines:
        peaks[engine], timings, wall = run_engine(engine, ph, args.threads, out / engine)
        report[engine] = {**accuracy(peaks[engine], ph), "timings_s": timings, "wall_s": wall}
        print(f"[diffusion] {engine}: {json.dumps(report[engine])}", file=sys.stderr)
    if len(peaks) == 2:
        (a, pa), (b, pb) = peaks.items()
        single = ph.n_fibres == 1
        da, aa = unit_peak(pa)
        db, ab = unit_peak(pb)
        report[f"{a}_vs_{b}"] = {"single_first_peak_deg": stats(angle_deg(da, db)[single]),
                                 "amplitude_ratio_median": round(float(np.median(ab[single] / aa[single])), 4),
                                 "same_sign_fraction": round(float(((da * db).sum(-1) > 0)[single].mean()), 4)}
    if args.hcp:
        hcp = simulate(out / "hcp", shape=(145, 174, 145), n_dirs=args.hcp_dirs, n_b0=args.b0s, snr=args.snr,
                       seed=args.seed + 1, margin=(12, 12, 12), ellipsoid=True)
        report["hcp"] = {"shape": [145, 174, 145], "dirs": args.hcp_dirs, "mask_voxels": int((hcp.n_fibres > 0).sum())}
        for engine in engines:
            _, timings, wall = run_engine(engine, hcp, args.threads, out / f"hcp-{engine}")
            report["hcp"][engine] = {"timings_s": timings, "wall_s": wall}
            print(f"[diffusion] hcp {engine}: {wall} s {timings}", file=sys.stderr, flush=True)
        shutil.rmtree(out / "hcp", ignore_errors=True)
    report["machine"]["load_avg_end"] = list(__import__("os").getloadavg())
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "results.md").write_text(markdown(report))
    print(markdown(report))
    print(f"[diffusion] results: {out}", file=sys.stderr)
    return 0


def markdown(r: dict) -> str:
    lines = [f"CPU: {r['machine']['cpu']} ({r['machine']['cores']} cores), {r['machine']['mrtrix']}, "
             f"dipy {r['machine']['dipy']}, threads {r['threads']}; phantom {r['phantom']}", "",
             "| engine | single-fibre first peak, median / p95 (deg) | crossing, both fibres, median / p95 (deg) "
             "| wall (s) |", "|---|---|---|---|"]
    for engine in ("mrtrix", "dipy"):
        if engine in r:
            e = r[engine]
            s, c = e["single_first_peak_deg"], e["crossing_both_fibres_deg"]
            lines.append(f"| {engine} | {s['median']} / {s['p95']} (n={s['n']}) | {c['median']} / {c['p95']} "
                         f"(n={c['n']}) | {e['wall_s']} |")
    if "mrtrix_vs_dipy" in r:
        v = r["mrtrix_vs_dipy"]
        lines += ["", f"mrtrix vs dipy, single-fibre first peak: median {v['single_first_peak_deg']['median']} deg, "
                      f"p95 {v['single_first_peak_deg']['p95']} deg; amplitude ratio dipy/mrtrix (median) "
                      f"{v['amplitude_ratio_median']}; same sign {v['same_sign_fraction']}"]
    if "hcp" in r:
        h = r["hcp"]
        lines += ["", f"HCP-size grid {h['shape']}, {h['dirs']} directions, {h['mask_voxels']} mask voxels: " +
                  ", ".join(f"{e} {h[e]['wall_s']} s ({h[e]['timings_s']})" for e in ("mrtrix", "dipy") if e in h)]
    return "\n".join(lines) + "\n"
