"""python -m runtime.run PEAKS (console script: tractseg-aot): upstream TractSeg's CLI on an exported bundle.

A thin command line over :class:`runtime.pipeline.TractSegPipeline`: every check on the input, the bundle and
the output locations runs before the network; the output folder is locked for the run; outputs are staged and
moved into place together at the end (:mod:`runtime.outputs.output_set`), the report last.

Exit status: 0 done; 1 an input, bundle, backend or output problem (one line on stderr, no output written);
2 bad command line; 3 internal error (a bug: the traceback is saved to a file named on stderr);
130 interrupted (SIGINT); 143 terminated (SIGTERM). Existing outputs are refused unless --force.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from runtime.checks.preflight import check_outputs, open_manifest, resolve_bundle_dir
from runtime.cli import add_peaks_arguments, add_run_options, command_parser, guarded, path_arg, run_options
from runtime.errors import OutputError
from runtime.io.nifti_io import default_output_dir
from runtime.options import RunOptions
from runtime.outputs.output_set import COMMITTED
from runtime.qc.report import write_report
from runtime.subject import CheckedSubject, check_input_path, check_subject, run_subject

log = logging.getLogger("tractseg_aot")


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, RunOptions]:
    p = command_parser("tractseg-aot", "runtime.run", __doc__)
    add_peaks_arguments(p)
    add_run_options(p)
    p.add_argument("--report", metavar="FILE", type=path_arg, help="write a JSON report of the run")
    args = p.parse_args(argv)
    options = run_options(p, args)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args, options


def run(peaks: str | os.PathLike[str], output: str | os.PathLike[str] | None, options: RunOptions,
        report: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The whole CLI run; returns the report's document. Raises TractSegError for anything the user can fix.

    Cheap checks first (the input path, the bundle's manifest, then :func:`runtime.subject.check_subject`:
    outputs, extras, the input's content), then the backend is opened (sha256 of the artifact, load), then the
    subject runs."""
    check_input_path(peaks)
    outdir = Path(output) if output else default_output_dir(peaks)
    manifest = open_manifest(resolve_bundle_dir(options.artifacts, options.model), options.model)
    if not options.raw_diffusion_input:
        checked = check_subject(peaks, outdir, options, manifest, report)
        return _segment(checked, options)
    from runtime.raw_input import checked_from_raw, peaks_from_raw

    check_outputs(options.output_files(outdir), options.force, Path(report) if report else None, [Path(peaks)])
    with peaks_from_raw(peaks, outdir, options) as raw:
        document = _segment(checked_from_raw(raw, outdir, options, manifest, report), options)
    document["input"]["raw_diffusion_input"] = {"dwi": str(Path(peaks).resolve()), "peaks_engine": raw.engine,
                                                "peaks_timings_s": raw.timings}
    return document


def _segment(checked: CheckedSubject, options: RunOptions) -> dict[str, Any]:
    pipeline = options.open_pipeline()
    log.info("%s", pipeline.describe())
    return run_subject(pipeline, checked, options).document


def main(argv: list[str] | None = None) -> int:
    args, options = parse_args(argv)

    def action() -> None:
        document = run(args.peaks, args.output, options, args.report)
        document["command"] = ["python", "-m", "runtime.run", *args.argv]
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
