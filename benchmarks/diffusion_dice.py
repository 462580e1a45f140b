"""python -m benchmarks diffusion-dice: the two peak engines end to end on an HCP-like DWI simulated from a real
brain's peaks (benchmarks/diffusion_brain.py), with the same full-size bundle.

Each run is the command a user types, timed as a whole (wall, CPU of the process tree, max RSS by /usr/bin/time
-v, the load average before it): ``python -m runtime.run DWI --raw_diffusion_input --bvals --bvecs --brain_mask
--peaks-engine E --csd_type C --nr_cpus T --report R`` per engine (the report holds the peak engine's own step
times), ``python -m runtime.run truth_peaks.nii.gz`` (the segmentation of the simulation's truth: the reference
masks), and with ``--upstream`` upstream's ``TractSeg -i DWI --raw_diffusion_input ...`` with the bundle's random
weights saved in upstream's checkpoint format. Then: per-bundle Dice between every pair of runs, first-peak angles
(single-fibre voxels; all of them and those inside any bundle mask) against the truth and between engines, and
whether our mrtrix peaks equal upstream's. Results: <out>/results.{json,md}; --publish copies them to
benchmarks/results/diffusion-dice-<machine>-<label>.{json,md}.

The bundle's weights are random (seeded): its masks are not anatomical, so the Dice measures how much the
segmentation moves when the peaks change, not how well bundles are found.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from benchmarks.cohort_common import TIME_V, failure, log, timed
from benchmarks.diffusion_agreement import dice_table, peak_agreement, read_masks, same_peaks
from benchmarks.machine import REPO, load_average, machine_info, machine_kind

UPSTREAM_CLI = Path(sys.executable).parent / "TractSeg"


def add_options(p: argparse.ArgumentParser) -> None:
    from export.sample_inputs import EXAMPLE_PEAKS

    p.add_argument("--peaks", type=Path, default=EXAMPLE_PEAKS, help=f"the real peaks (default {EXAMPLE_PEAKS})")
    p.add_argument("--upsample", type=int, default=1, help="repeat each voxel N times per axis (2: 146x174x146)")
    p.add_argument("--crop", type=_crop, help="X0:X1,Y0:Y1,Z0:Z1 of the peaks grid only (before upsampling)")
    p.add_argument("--shells", default="1000", help="b-values of the shells (default 1000; 1000,2000 for msmt)")
    p.add_argument("--dirs", type=int, default=90, help="directions per shell (default 90, HCP's)")
    p.add_argument("--b0s", type=int, default=18, help="b0 volumes (default 18, HCP's)")
    p.add_argument("--snr", type=float, default=30.0, help="b0 SNR of the Rician noise (default 30)")
    p.add_argument("--seed", type=int, default=0, help="simulation seed")
    p.add_argument("--engines", default="mrtrix,dipy")
    p.add_argument("--csd-type", default="csd", choices=("csd", "csd_msmt"))
    p.add_argument("--threads", type=int, default=2, help="--nr_cpus of every run (default 2)")
    p.add_argument("--no-truth", action="store_true", help="skip the segmentation of the truth peaks")
    p.add_argument("--upstream", action="store_true", help="also run upstream's TractSeg --raw_diffusion_input")
    p.add_argument("--bundle", type=Path, help="full-size bundle (default: seed --weights-seed, S=144, ONNX, "
                                               "built once and cached under benchmarks/out/bundles)")
    p.add_argument("--weights-seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="results folder (default benchmarks/out/<timestamp>-diffusion-dice)")
    p.add_argument("--publish", metavar="LABEL", help="copy results to benchmarks/results/diffusion-dice-"
                                                      "<machine>-LABEL.{json,md}")
    p.add_argument("--keep", action="store_true", help="keep the simulated DWI and the runs' outputs")
    p.add_argument("--resume", action="store_true", help="reuse the runs of an earlier --keep invocation with the "
                                                         "same --out (their figures and outputs); run the rest")


def _crop(text: str) -> tuple[slice, slice, slice]:
    parts = [tuple(int(v) for v in axis.split(":")) for axis in text.split(",")]
    if len(parts) != 3 or any(len(p) != 2 for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: expected X0:X1,Y0:Y1,Z0:Z1")
    return tuple(slice(a, b) for a, b in parts)  # type: ignore[return-value]


def _bundle(args: argparse.Namespace) -> tuple[Path, dict]:
    if args.bundle:
        return args.bundle.resolve(), {"given": str(args.bundle)}
    from benchmarks.bundle import cached_bundle, export_args

    return cached_bundle(export_args(args.weights_seed, 144, 4, "onnx", "cpu"), log=log)


def _timed(cmd: list[str], name: str) -> dict:
    wrapped = [str(TIME_V), "-v", *cmd] if TIME_V.is_file() else cmd
    log(f"[diffusion-dice] {name}: {' '.join(cmd[:3])} ... (load {load_average()})")
    run = timed(wrapped)
    run["stderr"], _, usage = run["stderr"].partition("\tCommand being timed")  # /usr/bin/time -v's block
    run["command"] = " ".join(str(c) for c in cmd)
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", usage)
    run["max_rss_mb"] = round(int(match.group(1)) / 1024, 1) if match else None
    run["load_average_after"] = load_average()
    why = failure(run)
    if why:
        raise RuntimeError(f"{name} failed: {why}")
    log(f"[diffusion-dice] {name}: {run['wall_s']:.1f} s, max RSS {run['max_rss_mb']} MB")
    return {k: v for k, v in run.items() if k not in ("stdout", "stderr")}


def _ours(args, phantom, bundle: Path, engine: str, out: Path) -> dict:
    report = out / f"{engine}-report.json"
    run = _timed([sys.executable, "-m", "runtime.run", str(phantom.dwi), "-o", str(out / engine), "--artifacts",
                  str(bundle), "--raw_diffusion_input", "--bvals", str(phantom.bvals), "--bvecs", str(phantom.bvecs),
                  "--brain_mask", str(phantom.mask), "--peaks-engine", engine, "--csd_type", args.csd_type,
                  "--nr_cpus", str(args.threads), "--report", str(report), "--quiet"], engine)
    document = json.loads(report.read_text())
    run["peaks_timings_s"] = document["input"]["raw_diffusion_input"].get("peaks_timings_s")
    run["segmentation_timings_s"] = document.get("timings_s")
    return run


def _truth(args, phantom, bundle: Path, out: Path) -> dict:
    return _timed([sys.executable, "-m", "runtime.run", str(phantom.truth_peaks), "-o", str(out / "truth"),
                   "--artifacts", str(bundle), "--nr_cpus", str(args.threads), "--quiet"], "truth")


def _upstream(args, phantom, bundle: Path, out: Path) -> dict:
    """Upstream's CLI with the bundle's weights as its tract_segmentation checkpoint (TRACTSEG_WEIGHTS_DIR)."""
    from benchmarks.bundle import open_bundle, random_seed
    from benchmarks.runners import upstream_state_dict
    from benchmarks.upstream_net import save_upstream_checkpoint, upstream_network

    manifest = open_bundle(bundle)
    seed = random_seed(manifest)
    weights = out / f"upstream-weights-seed{seed}"
    weights.mkdir(parents=True, exist_ok=True)
    net = upstream_network(manifest.n_classes, seed)
    net.load_state_dict(upstream_state_dict(seed, manifest.n_classes), strict=True)
    save_upstream_checkpoint(net, weights / "pretrained_weights_tract_segmentation_v3.npz")
    del net
    os.environ["TRACTSEG_WEIGHTS_DIR"] = str(weights)
    return _timed([str(UPSTREAM_CLI), "-i", str(phantom.dwi), "-o", str(out / "upstream"), "--raw_diffusion_input",
                   "--bvals", str(phantom.bvals), "--bvecs", str(phantom.bvecs), "--brain_mask", str(phantom.mask),
                   "--csd_type", args.csd_type, "--nr_cpus", str(args.threads)], "upstream")


def _peaks(folder: Path) -> np.ndarray:
    return np.asarray(nib.load(folder / "peaks.nii.gz").get_fdata(dtype=np.float32))


def _earlier_runs(out: Path) -> dict[str, dict]:
    """--resume: the runs recorded in <out>/results.json whose output folder is still whole (72 masks)."""
    try:
        runs = json.loads((out / "results.json").read_text())["runs"]
    except (OSError, ValueError, KeyError):
        return {}
    return {name: run for name, run in runs.items()
            if len(list((out / name / "bundle_segmentations").glob("*.nii.gz"))) == 72}


def _measure(report: dict, phantom, out: Path, engines: list[str], upstream: bool) -> None:
    """Dice of every pair of runs (whole grid, and inside the brain mask), first-peak angles, peaks identity."""
    runs = list(report["runs"])
    masks = {name: read_masks(out / name) for name in runs}
    brain = phantom.n_fibres > 0
    pairs = [(a, b) for i, a in enumerate(runs) for b in runs[i + 1:]]
    report["dice"] = {f"{a}_vs_{b}": dice_table(masks[a], masks[b]) for a, b in pairs}
    inside = {name: {k: m & brain for k, m in masks[name].items()} for name in runs}
    report["dice_inside_brain"] = {f"{a}_vs_{b}": dice_table(inside[a], inside[b]) for a, b in pairs}
    inside_any = np.zeros(brain.shape, dtype=bool)
    for name in engines:
        for mask in masks[name].values():
            inside_any |= mask
    peaks = {name: _peaks(out / name) for name in engines + (["upstream"] if upstream else [])}
    report["peaks"] = peak_agreement(peaks, phantom.directions[..., 0, :], phantom.n_fibres == 1,
                                     {"single_fibre_all": brain, "single_fibre_inside_masks": inside_any})
    if upstream and "mrtrix" in engines:
        report["mrtrix_peaks_vs_upstream"] = same_peaks(out / "mrtrix" / "peaks.nii.gz",
                                                        out / "upstream" / "peaks.nii.gz")


def main(args: argparse.Namespace) -> int:
    from benchmarks.diffusion_brain import simulate_from_peaks

    out = (args.out or REPO / "benchmarks" / "out" / f"{time.strftime('%Y%m%dT%H%M%S')}-diffusion-dice").resolve()
    out.mkdir(parents=True, exist_ok=True)
    engines = [e for e in args.engines.split(",") if e]
    info = machine_info()
    bundle, how = _bundle(args)
    started = time.perf_counter()
    phantom = simulate_from_peaks(args.peaks, out / "dwi", shells=tuple(float(b) for b in args.shells.split(",")),
                                  n_dirs=args.dirs, n_b0=args.b0s, snr=args.snr, seed=args.seed,
                                  upsample=args.upsample, crop=args.crop)
    report: dict = {"machine": info, "bundle": {"dir": str(bundle), **how}, "csd_type": args.csd_type,
                    "threads": args.threads, "simulation": {
                        **phantom.summary(), "peaks": str(args.peaks), "upsample": args.upsample,
                        "crop": None if args.crop is None else [[c.start, c.stop] for c in args.crop],
                        "shells": args.shells, "dirs_per_shell": args.dirs, "b0s": args.b0s, "snr": args.snr,
                        "seed": args.seed, "seconds": round(time.perf_counter() - started, 1)}, "runs": {}}
    log(f"[diffusion-dice] simulated {report['simulation']}")
    earlier = _earlier_runs(out) if args.resume else {}
    runs = report["runs"]
    for name in [*engines, *([] if args.no_truth else ["truth"]), *(["upstream"] if args.upstream else [])]:
        if name in earlier:
            runs[name] = {**earlier[name], "reused_from_an_earlier_invocation": True}
            log(f"[diffusion-dice] {name}: reusing the earlier run's outputs and figures (--resume)")
        elif name == "truth":
            runs[name] = _truth(args, phantom, bundle, out)
        elif name == "upstream":
            runs[name] = _upstream(args, phantom, bundle, out)
        else:
            runs[name] = _ours(args, phantom, bundle, name, out)
    _measure(report, phantom, out, engines, args.upstream)
    report["machine"]["load_average_at_end"] = load_average()
    from benchmarks.diffusion_tables import markdown

    for file, text in (("results.json", json.dumps(report, indent=2) + "\n"), ("results.md", markdown(report))):
        (out / file).write_text(text)
    print(markdown(report))
    if args.publish:
        target = REPO / "benchmarks" / "results" / f"diffusion-dice-{machine_kind(info)}-{args.publish}"
        for suffix in ("json", "md"):
            shutil.copyfile(out / f"results.{suffix}", f"{target}.{suffix}")
        log(f"[diffusion-dice] published: {target}.{{json,md}}")
    if not args.keep:
        for name in ["dwi", *runs, *[p.name for p in out.glob("upstream-weights-*")]]:
            shutil.rmtree(out / name, ignore_errors=True)
    log(f"[diffusion-dice] results: {out}")
    return 0
