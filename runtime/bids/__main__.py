"""``python -m runtime.bids BIDS_DIR OUTPUT_DIR {participant,group} [--participant_label ...] [--session-label ...]
[--skip-bids-validation] [--chain [--scalar-param LABEL]]`` (console script ``tractseg-aot-bids``): the BIDS App
command line (the BIDS Apps convention: positional ``bids_dir output_dir analysis_level``, labels with or without
``sub-``).

This module only parses the arguments (the BIDS App's, the run options of ``runtime.run``, the chain's and the
study runner's workers/parts); :mod:`runtime.bids.app` finds the series (:func:`~runtime.bids.app.plan`) and runs
them. ``--print-plan`` prints the plan (one line per series: DWI, bval, bvec, mask) and writes nothing;
``--boutiques`` prints the App's Boutiques descriptor (:mod:`runtime.bids.boutiques`, made from this parser).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from runtime.bids.app import plan, run_group, run_participants
from runtime.bids.boutiques import descriptor
from runtime.chain import ChainOptions
from runtime.cli import command_parser, guarded
from runtime.cli.arguments import add_chain_arguments, add_run_arguments, add_study_arguments
from runtime.cli.options import chain_options, run_options, study_options
from runtime.cohort import StudyOptions
from runtime.host import tool_version

SCRIPT = "tractseg-aot-bids"


class _Boutiques(argparse.Action):
    """``--boutiques``: print the descriptor and exit 0 (before the positionals are required, as ``--help``)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0,
                         help=kwargs.get("help"))

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(json.dumps(descriptor(parser, SCRIPT, tool_version()), indent=2))
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = command_parser(SCRIPT, "runtime.bids", __doc__)
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
    p.add_argument("--boutiques", action=_Boutiques, help="print this command's Boutiques descriptor (JSON) and stop")
    # every input is a DWI with its own bvals / bvecs / mask beside it: no --raw_diffusion_input, no --bvals etc.
    add_run_arguments(p, raw_flag=False, raw_files=False)
    c = p.add_argument_group("tracking and tractometry of every series (runtime.chain on its peaks)")
    c.add_argument("--chain", action="store_true",
                   help="then run the whole chain on each series' peaks: endings, TOM, tracking (TRX tractograms "
                        "under BEP046 names) and, with --scalar-param, tractometry")
    c.add_argument("--scalar-param", dest="scalar_param", metavar="LABEL",
                   help="the scalar map profiled along the tracts: derivatives/*/sub-<p>/[ses-<s>/]dwi/<series>"
                        "[_space-orig]_model-<model>_param-LABEL_dwimap.nii[.gz] (BEP016), e.g. fa")
    add_chain_arguments(p, tracking_format=False)  # BEP046 stores tractograms as TRX
    p.set_defaults(tracking_format="trx")
    add_study_arguments(p, scheduler=False)
    return p


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, StudyOptions, ChainOptions | None]:
    p = build_parser()
    args = p.parse_args(argv)
    run = run_options(p, args, raw=True)
    chain = None
    if args.chain:
        if args.artifacts is not None or args.output_type != "tract_segmentation":
            p.error("--chain runs three bundles: name them with --artifacts-root or --tract-artifacts / "
                    "--endings-artifacts / --tom-artifacts, not --artifacts / --output_type")
        chain = chain_options(p, args, run.backend)
    elif args.scalar_param:
        p.error("--scalar-param is for --chain")
    if args.scalar_param is not None and not re.fullmatch(r"[A-Za-z0-9]+", args.scalar_param):
        p.error(f"--scalar-param {args.scalar_param!r}: a BIDS label (letters and digits), e.g. fa")
    return args, study_options(p, args, run), chain


def main(argv: Sequence[str] | None = None) -> int:
    args, options, chain = parse_args(argv)
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
            status["code"] = run_participants(series, args.bids_dir, args.output_dir, options, chain,
                                              args.scalar_param)

    return guarded(action, options.per_subject.quiet, final=argv is None) or status["code"]


if __name__ == "__main__":
    sys.exit(main())
