"""``python -m runtime.bids BIDS_DIR OUTPUT_DIR {participant,group} [--participant_label ...] [--session-label ...]
[--skip-bids-validation]``: the BIDS App command line (the BIDS Apps convention: positional ``bids_dir
output_dir analysis_level``, labels with or without ``sub-``).

This module parses the arguments (the BIDS App's, the run options of ``runtime.run`` and the study runner's
workers/parts) and builds the list of diffusion series (:func:`plan`); :func:`runtime.bids.study.run_bids` runs
them (``main(argv, run=...)`` takes another ``run(series, args) -> int``). ``--print-plan`` prints the plan (one
line per series: DWI, bval, bvec, mask) and writes nothing.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from runtime.bids.layout import BidsDwi, find_dwis
from runtime.cli import add_run_options, guarded, run_options
from runtime.errors import InputError

PROG = "python -m runtime.bids"
Runner = Callable[[list[BidsDwi], argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="TractSeg bundle segmentation of every DWI of a BIDS "
                                "dataset, written as BIDS derivatives")
    p.add_argument("bids_dir", type=Path, help="the BIDS dataset (raw)")
    p.add_argument("output_dir", type=Path, help="where the derivatives go (e.g. <bids_dir>/derivatives/tractseg-aot)")
    p.add_argument("analysis_level", choices=("participant", "group"),
                   help="participant: segment each DWI; group: the study table/report over the participant outputs")
    p.add_argument("--participant_label", "--participant-label", nargs="+", metavar="LABEL",
                   help="only these participants (01 or sub-01); default all")
    p.add_argument("--session-label", "--session_label", nargs="+", metavar="LABEL",
                   help="only these sessions (1 or ses-1); default all")
    p.add_argument("--skip-bids-validation", "--skip_bids_validation", action="store_true",
                   help="do not require dataset_description.json in bids_dir")
    p.add_argument("--print-plan", action="store_true", help="print the series found and stop")
    add_run_options(p)
    p.add_argument("--workers", type=int, metavar="N", help="as runtime.cohort (default: from cores and memory; 0: "
                   "every series in this process, without Dask)")
    p.add_argument("--threads-per-worker", type=int, metavar="T", help="as runtime.cohort")
    p.add_argument("--num-parts", type=int, default=1, metavar="N", help="split the series into N parts")
    p.add_argument("--part-id", type=int, default=0, metavar="K", help="run part K (0 .. N-1)")
    return p


def plan(args: argparse.Namespace) -> list[BidsDwi]:
    """The diffusion series to process; InputError (one line) when the folders or labels are wrong."""
    bids_dir, output_dir = args.bids_dir.resolve(), args.output_dir.resolve()
    if output_dir == bids_dir:
        raise InputError(f"{args.output_dir}: the output folder is the BIDS folder itself; use e.g. "
                         f"{args.bids_dir}/derivatives/tractseg-aot")
    return find_dwis(bids_dir, args.participant_label, args.session_label,
                     require_description=not args.skip_bids_validation)


def main(argv: Sequence[str] | None = None, run: Runner | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.raw_diffusion_input, args.bvals, args.bvecs, args.brain_mask = True, None, None, None
    options = run_options(parser, args)
    if args.threads_per_worker is None:
        from runtime.checks.preflight import available_cores
        from runtime.cohort.engine import default_threads

        args.threads_per_worker = default_threads(available_cores())
    if options.threads is None:
        options = options.replace(threads=args.threads_per_worker)
    args.scheduler = None
    status = {"code": 0}

    def action() -> None:
        series = plan(args)
        if args.print_plan:
            for item in series:
                print(f"{item.name}\t{item.dwi}\t{item.bval}\t{item.bvec}\t{item.brain_mask or '-'}")
        elif run is not None:
            status["code"] = run(series, args)
        else:
            from runtime.bids.study import run_bids

            status["code"] = run_bids(series, args, options)

    return guarded(action, options.quiet, final=argv is None) or status["code"]


if __name__ == "__main__":
    sys.exit(main())
