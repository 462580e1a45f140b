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
from importlib.metadata import PackageNotFoundError, version
from collections.abc import Callable, Sequence
from pathlib import Path

from runtime.bids.layout import BidsDwi, find_dwis
from runtime.cli import add_run_options, guarded, run_options
from runtime.bids.naming import dataset_description, write_dataset_description
from runtime.bids.derivatives import STUDY_FOLDER, derivative_links
from runtime.errors import InputError, OutputError
from runtime.options import RunOptions

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


def run_bids(series: list[BidsDwi], args: argparse.Namespace, options: RunOptions) -> int:
    """participant or group level (see the module docstring); the exit status."""
    from runtime.checks.preflight import open_manifest, resolve_bundle_dir
    from runtime.cohort.__main__ import run_study
    from runtime.cohort.records import read_table
    from runtime.cohort.subjects import Subject, safe_id

    output_dir = Path(args.output_dir)
    outroot = output_dir / STUDY_FOLDER
    if args.analysis_level == "group":
        from runtime.qc.study_report import write_study_report

        try:
            rows = read_table(outroot / "cohort.csv")
        except ValueError as error:
            raise InputError(f"{error} (run the participant level first)") from None
        write_study_report(outroot, rows)
        return 0 if all(row["status"] == "done" for row in rows) else 1
    if not series:
        raise InputError(f"{args.bids_dir}: no diffusion series to process")
    try:
        tool_version = version("tractseg-aot")
    except PackageNotFoundError:
        tool_version = "unknown"
    output_dir.mkdir(parents=True, exist_ok=True)
    write_dataset_description(output_dir, dataset_description(tool_version, peaks_engine=options.peaks_engine))
    by_id = {safe_id(s.name): s for s in series}
    subjects = [Subject(sid, s.dwi, (str(s.bval), str(s.bvec), str(s.brain_mask) if s.brain_mask else None))
                for sid, s in sorted(by_id.items())]
    manifest = open_manifest(resolve_bundle_dir(options.artifacts, options.model), options.model)
    status = run_study(args, options, subjects, outroot, manifest.bundle_id)
    done = [row["subject"] for row in read_table(outroot / "cohort.csv") if row["status"] == "done"]
    for sid in done:
        if sid in by_id:
            try:
                derivative_links(by_id[sid], outroot / sid, output_dir, options)
            except OSError as error:
                raise OutputError(f"{output_dir}: cannot link {sid}'s derivatives ({error.strerror or error})") \
                    from None
    return status


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
            status["code"] = run_bids(series, args, options)

    return guarded(action, options.quiet, final=argv is None) or status["code"]


if __name__ == "__main__":
    sys.exit(main())
