"""``python -m runtime.bids BIDS_DIR OUTPUT_DIR {participant,group} [--participant_label ...] [--session-label ...]
[--skip-bids-validation]``: the BIDS App command line (the BIDS Apps convention: positional ``bids_dir
output_dir analysis_level``, labels with or without ``sub-``).

This module parses the arguments and builds the list of diffusion series (:func:`plan`). Running the study runner
over them is wired by ``runtime.cohort``'s owner through ``main(argv, run=...)``: ``run(series, args) -> int``.
Without a runner, ``main`` prints the plan (one line per series: DWI, bval, bvec, mask) and writes nothing.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from runtime.bids.layout import BidsDwi, find_dwis
from runtime.errors import InputError, TractSegError, one_line

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
    args = build_parser().parse_args(argv)
    try:
        series = plan(args)
        if run is not None:
            return run(series, args)
        for item in series:
            print(f"{item.name}\t{item.dwi}\t{item.bval}\t{item.bvec}\t{item.brain_mask or '-'}")
        return 0
    except TractSegError as error:
        print(f"{PROG}: error: {one_line(error, 1000)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
