"""``python -m runtime.bids BIDS_DIR OUTPUT_DIR {participant,group} [--participant_label ...] [--session-label ...]
[--skip-bids-validation]`` (console script ``tractseg-aot-bids``): the BIDS App command line (the BIDS Apps
convention: positional ``bids_dir output_dir analysis_level``, labels with or without ``sub-``).

This module only parses the arguments (the BIDS App's, the run options of ``runtime.run`` and the study
runner's workers/parts); :mod:`runtime.bids.app` finds the series (:func:`~runtime.bids.app.plan`) and runs them.
``--print-plan`` prints the plan (one line per series: DWI, bval, bvec, mask) and writes nothing.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from runtime.bids.app import plan, run_group, run_participants
from runtime.cli import command_parser, guarded
from runtime.cli.arguments import add_run_arguments, add_study_arguments
from runtime.cli.options import run_options, study_options
from runtime.cohort import StudyOptions


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, StudyOptions]:
    p = command_parser("tractseg-aot-bids", "runtime.bids", __doc__)
    p.description = "TractSeg bundle segmentation of every DWI of a BIDS dataset, written as BIDS derivatives"
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
    # every input is a DWI with its own bvals / bvecs / mask beside it: no --raw_diffusion_input, no --bvals etc.
    add_run_arguments(p, raw_flag=False, raw_files=False)
    add_study_arguments(p, scheduler=False)
    args = p.parse_args(argv)
    return args, study_options(p, args, run_options(p, args, raw=True))


def main(argv: Sequence[str] | None = None) -> int:
    args, options = parse_args(argv)
    status = {"code": 0}

    def action() -> None:
        series = plan(args.bids_dir, args.output_dir, args.participant_label, args.session_label,
                      validate=not args.skip_bids_validation)
        if args.print_plan:
            for item in series:
                print(f"{item.name}\t{item.dwi}\t{item.bval}\t{item.bvec}\t{item.brain_mask or '-'}")
        elif args.analysis_level == "group":
            status["code"] = run_group(args.output_dir)
        else:
            status["code"] = run_participants(series, args.bids_dir, args.output_dir, options)

    return guarded(action, options.per_subject.quiet, final=argv is None) or status["code"]


if __name__ == "__main__":
    sys.exit(main())
