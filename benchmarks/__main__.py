"""python -m benchmarks MODE (quick, full, cohort-*, precision, tracking, diffusion, winograd): latency and drift of
every artifact against the live JAX model and upstream PyTorch (quick, full), and the cost of a study (cohort-*). quick is CI's (exit 1
when an fp32 artifact drifts over the tolerance); full adds repeats and full-subject runs; cohort-throughput
compares a shell loop of runtime.run with runtime.cohort settings on HCP-size subjects; cohort-scale measures
runtime.cohort's own overhead, rerun and memory on many tiny subjects; precision compares every precision of a
bundle with fp32 (speed, drift, Dice). Results:
benchmarks/out/<timestamp>-<mode>/results.{json,md[,png]}."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks import TOLERANCE
from runtime.network.backends import BACKENDS


def _latency_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", type=Path, help="benchmark this bundle (built with --random-weights) instead of "
                                               "building / reusing the cached one")
    p.add_argument("--out", type=Path, help="results folder (default benchmarks/out/<timestamp>-<mode>)")
    p.add_argument("--publish", action="store_true", help="copy the results to benchmarks/results/ and put the "
                                                          "table in benchmarks/README.md")
    p.add_argument("--tolerance", type=float, default=TOLERANCE, help="fp32 max abs probability drift gate")
    p.add_argument("--backends", help="comma list: only these artifact backends (default: all installed)")
    p.add_argument("--no-upstream", action="store_true", help="leave out upstream PyTorch")
    p.add_argument("--per-row-s", type=float, help="timed seconds per row (default quick 5, full 30)")
    p.add_argument("--budget-min", type=float, default=45.0,
                   help="full: a subject run that would end past this many minutes is extrapolated instead")
    p.add_argument("--subject-shape", type=int, nargs=3, default=(145, 174, 145), metavar=("X", "Y", "Z"))
    g = p.add_argument_group("the bundle built when --bundle is not given (cached under benchmarks/out/bundles)")
    g.add_argument("--seed", type=int, default=0, help="random weights seed")
    g.add_argument("--slice-size", type=int, default=144)
    g.add_argument("--batch-size", type=int, default=4)
    g.add_argument("--formats", default="onnx,iree,stablehlo,savedmodel")
    g.add_argument("--platforms", default="cpu")
    p.add_argument("--input-seed", type=int, default=1, help="seed of the synthetic check slices")


def _cohort_options(p: argparse.ArgumentParser, subjects: int, shape: str) -> None:
    p.add_argument("--subjects", type=int, default=subjects, help=f"synthetic subjects (default {subjects})")
    p.add_argument("--shape", default=shape, help=f"X,Y,Z of each subject (default {shape})")
    p.add_argument("--bundle", type=Path, help="use this bundle instead of building / reusing the cached one")
    p.add_argument("--out", type=Path, help="results folder (default benchmarks/out/<timestamp>-<mode>)")
    p.add_argument("--backend", choices=("auto", *BACKENDS), default="auto", help="passed to runtime.run / cohort")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="passed to runtime.run / cohort")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description="latency and drift of every artifact "
                                "(quick, full); the cost of a study (cohort-throughput, cohort-scale)")
    modes = ("quick,full,cohort-throughput,cohort-scale,cohort-rerun,precision,tracking,diffusion,diffusion-dice,"
             "winograd,winograd-engines")
    sub = p.add_subparsers(dest="mode", required=True, metavar="{" + modes + "}")
    for mode, text in (("quick", "CI: a few batches per backend, drift gate"),
                       ("full", "+ repeats, full-subject runs, Dice")):
        _latency_options(sub.add_parser(mode, help=text, description=text))
    t = sub.add_parser("cohort-throughput", help="subjects per hour: shell loop of runtime.run vs runtime.cohort",
                       description="subjects per hour: shell loop of runtime.run vs runtime.cohort settings")
    _cohort_options(t, 4, "145,174,145")
    g = t.add_argument_group("the bundle built when --bundle is not given (cached under benchmarks/out/bundles)")
    g.add_argument("--seed", type=int, default=0, help="random weights seed")
    g.add_argument("--slice-size", type=int, default=144, help="144 (default); 16 for a smoke test")
    g.add_argument("--batch-size", type=int, default=4)
    g.add_argument("--formats", default="onnx", help="export formats (onnx: onnxruntime and openvino)")
    t.add_argument("--configs", default="loop,1x2,2x1,default",
                   help="which to run, in this order (default all): loop = the shell loop, WxT = --workers W "
                        "--threads-per-worker T, default = the runner's own default (run once when it equals WxT)")
    s = sub.add_parser("cohort-scale", help="runtime.cohort's own overhead, rerun time and memory at scale",
                       description="runtime.cohort's own overhead, rerun time and driver memory on many tiny "
                                   "subjects (S=16 bundle), extrapolated to 100,000 subjects")
    _cohort_options(s, 2000, "12,14,11")
    s.add_argument("--workers", type=int, help="--workers for the Dask runs (default: runtime.cohort's own)")
    s.add_argument("--subset", type=int, default=100, help="M: subjects of the in-process run and of the second "
                                                           "point of the linear fit (at most N/4)")
    s.add_argument("--keep", action="store_true", help="keep the subject trees and outputs (N x 72 files)")
    r = sub.add_parser("cohort-rerun", help="runtime.cohort's rerun decision and driver memory, measured at scale",
                       description="one real subject replicated into N done subjects (S=16 bundle); the rerun "
                                   "must run nothing: its wall time and driver peak RSS")
    _cohort_options(r, 100_000, "12,14,11")
    r.add_argument("--keep", action="store_true", help="keep the subject trees")
    from benchmarks.precision import add_options

    add_options(sub.add_parser("precision", help="every precision of a bundle vs fp32: speed, drift, Dice",
                               description="every precision of a bundle vs fp32 on the same backend: ms/slice, "
                                           "GFLOP/s, drift, mask flips, full-subject network time and Dice"))
    from benchmarks.tracking import add_options as tracking_options

    tracking_options(sub.add_parser("tracking", help="runtime.tracking / tractometry vs upstream Tracking / "
                                     "Tractometry", description="tracking time per bundle, peak memory and "
                                     "tractometry time vs upstream's on full-size curved-bundle phantoms"))
    from benchmarks.diffusion import add_options as diffusion_options

    diffusion_options(sub.add_parser("diffusion", help="peaks from raw DWI: mrtrix vs dipy engine accuracy and time",
                                     description="runtime.diffusion's engines on a simulated multi-fibre phantom: "
                                                 "angular error vs the truth and each other, wall time"))
    from benchmarks.diffusion_dice import add_options as dice_options

    dice_options(sub.add_parser("diffusion-dice", help="peaks engines end to end on a DWI simulated from real peaks: "
                                "bundle Dice, angles, time (vs upstream's --raw_diffusion_input)",
                                description="mrtrix vs dipy engine (and upstream's TractSeg --raw_diffusion_input) "
                                            "on an HCP-like DWI simulated from a real brain's peaks, same bundle: "
                                            "per-bundle Dice, first-peak angles, wall time, memory"))
    from benchmarks.winograd import add_options as winograd_options

    winograd_options(sub.add_parser("winograd", help="direct vs Winograd 3x3 convolutions, network and per layer",
                                    description="direct vs winograd2 vs winograd4 (--conv-algorithm) on ONNX Runtime "
                                                "and OpenVINO: ms/slice, effective GFLOP/s, per layer and network"))
    from benchmarks.winograd_engines import add_options as engines_options

    engines_options(sub.add_parser("winograd-engines", help="engines with fused Winograd (IREE, ncnn, TVM) vs ONNX "
                                   "Runtime direct on the network", description="IREE (host, +Winograd pass), ncnn "
                                   "(Winograd on/off) and TVM vs ONNX Runtime's direct convolution, round-robin in "
                                   "one run: ms/slice, drift vs live JAX, peak RSS, build time (issue 31)"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.mode == "diffusion":
        from benchmarks.diffusion import main as diffusion

        return diffusion(args)
    if args.mode == "diffusion-dice":
        from benchmarks.diffusion_dice import main as diffusion_dice

        return diffusion_dice(args)
    if args.mode == "tracking":
        from benchmarks.tracking import main as tracking

        return tracking(args)
    if args.mode == "cohort-throughput":
        from benchmarks.cohort_throughput import main as throughput

        return throughput(args)
    if args.mode == "precision":
        from benchmarks.precision import main as precision

        return precision(args)
    if args.mode == "cohort-rerun":
        from benchmarks.cohort_rerun import main as rerun

        return rerun(args)
    if args.mode == "winograd":
        from benchmarks.winograd import main as winograd

        return winograd(args)
    if args.mode == "winograd-engines":
        from benchmarks.winograd_engines import main as winograd_engines

        return winograd_engines(args)
    if args.mode == "cohort-scale":
        from benchmarks.cohort_scale import main as scale

        return scale(args)
    from benchmarks.report import markdown
    from benchmarks.suite import run

    result, paths = run(args)
    print(markdown(result))
    for name, path in paths.items():
        print(f"[bench] {name}: {path}", file=sys.stderr)
    if not result["gate"]["passed"]:
        for failure in result["gate"]["failures"]:
            print(f"[bench] DRIFT GATE FAILED: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
