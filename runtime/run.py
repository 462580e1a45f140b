"""python -m runtime.run PEAKS (console script: tractseg-aot): upstream TractSeg's CLI on an exported bundle.

A thin command line over the subject runner (:func:`runtime.runner.segment_subject`): every check on the input,
the bundle and the output locations runs before the network; the output folder is locked for the run; outputs
are staged and moved into place together at the end (:mod:`runtime.outputs.output_set`), the report last.

Exit status: 0 done; 1 an input, bundle, backend or output problem (one line on stderr, no output written);
2 bad command line; 3 internal error (a bug: the traceback is saved to a file named on stderr);
130 interrupted (SIGINT); 143 terminated (SIGTERM). Existing outputs are refused unless --force.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from runtime.cli import command_parser, guarded, path_arg
from runtime.cli.arguments import add_input_arguments, add_run_arguments
from runtime.cli.options import input_path, run_options
from runtime.errors import OutputError
from runtime.host import tool_version
from runtime.io.nifti_io import default_output_dir
from runtime.options import RunOptions
from runtime.outputs.output_set import COMMITTED
from runtime.pipeline import TractSegPipeline
from runtime.qc.run_report import write_report
from runtime.runner import segment_subject

log = logging.getLogger("tractseg_aot")


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, RunOptions]:
    p = command_parser("tractseg-aot", "runtime.run", __doc__)
    add_input_arguments(p)
    add_run_arguments(p)
    p.add_argument("--report", metavar="FILE", type=path_arg, help="write a JSON report of the run")
    p.add_argument("--verbose", action="store_true", help="also print the options in effect and each step's time")
    g = p.add_argument_group("upstream's testing flags (refused: they need upstream's own experiment folders or "
                             "return mock outputs)")
    g.add_argument("--exp_name", metavar="folder_name", help="upstream: name of experiment - ONLY FOR TESTING")
    g.add_argument("--test", action="store_true", help="upstream: only needed for unittesting")
    p.add_argument("--version", action="version", version=f"%(prog)s {tool_version()}")
    args = p.parse_args(argv)
    args.peaks = input_path(p, args)
    if args.exp_name or args.test:
        p.error("--exp_name / --test are upstream's testing flags (its experiment folders, mock outputs): not "
                "supported")
    if args.verbose and args.quiet:
        p.error("--verbose and --quiet contradict each other")
    options = run_options(p, args)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args, options


def open_and_describe(options: RunOptions) -> TractSegPipeline:
    pipeline = TractSegPipeline.open_with(options)
    log.info("%s", pipeline.describe())
    return pipeline


def main(argv: list[str] | None = None) -> int:
    args, options = parse_args(argv)

    def action() -> None:
        outdir = args.output or default_output_dir(args.peaks)
        report = segment_subject(args.peaks, outdir, options, lambda: open_and_describe(options), report=args.report)
        document = {**report.document, "command": ["python", "-m", "runtime.run", *args.argv]}
        if args.verbose:
            log.info("options: %s", json.dumps(document["request"]))
            log.info("timings (s): %s", ", ".join(f"{k} {v}" for k, v in document["timings_s"].items()))
        if args.report:
            try:
                write_report(document, args.report)
            except OSError as error:  # e.g. a full disk: the outputs are in place, only the report is missing
                raise OutputError(f"--report {args.report}: cannot be written ({error.strerror or error}); the "
                                  f"outputs were written under {COMMITTED[-1] if COMMITTED else 'the output folder'}"
                                  ) from None

    return guarded(action, options.quiet, final=argv is None)  # argv None: the command line (python -m, script)


if __name__ == "__main__":
    sys.exit(main())
