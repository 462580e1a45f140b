"""python -m runtime.cohort INPUT... -o OUTROOT: segment a study, resumably, here or on a Dask cluster.

INPUT: peaks files and/or folders (searched for --pattern), or --list FILE. ``OUTROOT/<subject>/`` holds exactly
what ``runtime.run -o`` writes; ``OUTROOT/cohort.csv`` one row per subject. A rerun skips subjects whose
done-record still matches (input size + mtime, bundle, options) and redoes the rest; --force redoes all.
--num-parts N --part-id K runs part K of a deterministic split (job arrays: the parts may run at the same time),
with its own table; a later plain run merges. With --statistics, ``OUTROOT/statistics.csv`` and
``OUTROOT/report.html`` are (re)written at the end. The library: :func:`runtime.cohort.run_study`.

Exit status: 0 every subject done; 1 a subject failed (its one-line error is in cohort.csv) or the study could
not start; 2 bad command line; 3 internal error; 130 / 143 interrupted / terminated (a rerun resumes).
"""
from __future__ import annotations

import argparse
import sys

from runtime.cli import command_parser, guarded, path_arg
from runtime.cli.arguments import add_chain_arguments, add_run_arguments, add_study_arguments
from runtime.cli.options import chain_options, run_options, study_options
from runtime.cohort import StudyOptions, run_study
from runtime.cohort.subjects import DEFAULT_PATTERN


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, StudyOptions]:
    p = command_parser("tractseg-aot-cohort", "runtime.cohort", __doc__)
    p.add_argument("inputs", nargs="*", metavar="INPUT", type=path_arg, help="peaks files or folders to search")
    p.add_argument("-o", dest="output", metavar="OUTROOT", type=path_arg, required=True, help="study output folder")
    p.add_argument("--list", dest="list_file", metavar="FILE", type=path_arg,
                   help="one peaks path a line, or CSV with columns subject,peaks")
    p.add_argument("--pattern", default=DEFAULT_PATTERN, help=f"file pattern in folders (default {DEFAULT_PATTERN})")
    # a study's DWIs bring their own bvals / bvecs / mask (upstream's names beside each DWI): no --bvals etc.
    add_run_arguments(p, raw_files=False)
    c = p.add_argument_group("the whole chain per subject (runtime.chain): segmentation, endings, TOM, tracking, "
                             "tractometry; OUTROOT/tractometry.csv merges the subjects' Tractometry.csv")
    c.add_argument("--chain", action="store_true", help="run the whole chain for every subject")
    c.add_argument("--scalar-pattern", dest="scalar_pattern", metavar="PATTERN",
                   help="each subject's scalar map (e.g. FA): a glob relative to its peaks file's folder, {subject} "
                        "for its id, e.g. '*_FA.nii.gz'; without it the chain stops after tracking")
    add_chain_arguments(p)
    add_study_arguments(p)
    args = p.parse_args(argv)
    if not args.inputs and not args.list_file:
        p.error("give peaks files or folders, or --list FILE")
    run = run_options(p, args)
    if args.chain:
        if args.artifacts is not None or args.output_type != "tract_segmentation":
            p.error("--chain runs three bundles: name them with --artifacts-root or --tract-artifacts / "
                    "--endings-artifacts / --tom-artifacts, not --artifacts / --output_type")
        if run.raw is not None:
            p.error("--chain takes peaks, not --raw_diffusion_input")
        per_subject = chain_options(p, args, run.backend, args.scalar_pattern)
    elif args.scalar_pattern:
        p.error("--scalar-pattern is for --chain")
    else:
        per_subject = run
    return args, study_options(p, args, per_subject, args.pattern, args.list_file)


def main(argv: list[str] | None = None) -> int:
    args, options = parse_args(argv)
    status = {"code": 0}

    def action() -> None:
        status["code"] = run_study(args.inputs, args.output, options).status

    code = guarded(action, options.per_subject.quiet, final=argv is None)
    return code or status["code"]


if __name__ == "__main__":
    sys.exit(main())
