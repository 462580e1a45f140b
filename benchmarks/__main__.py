"""python -m benchmarks {quick,full}: latency and drift of every artifact against the live JAX model and
upstream PyTorch. quick is CI's (exit 1 when an fp32 artifact drifts over the tolerance); full adds repeats and
full-subject runs. Results: benchmarks/out/<timestamp>-<mode>/results.{json,md,png}."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks import TOLERANCE


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=("quick", "full"))
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
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
