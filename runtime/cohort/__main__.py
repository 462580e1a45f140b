"""python -m runtime.cohort INPUT... -o OUTROOT: segment a study, resumably, here or on a Dask cluster.

INPUT: peaks files and/or folders (searched for --pattern), or --list FILE. ``OUTROOT/<subject>/`` holds exactly
what ``runtime.run -o`` writes; ``OUTROOT/cohort.csv`` one row per subject. A rerun skips subjects whose
done-record still matches (input size + mtime, bundle, options) and redoes the rest; --force redoes all.
--num-parts N --part-id K runs part K of a deterministic split (job arrays), with its own table; a later plain
run merges. With --statistics, ``OUTROOT/statistics.csv`` and ``OUTROOT/report.html`` are (re)written at the end.

Exit status: 0 every subject done; 1 a subject failed (its one-line error is in cohort.csv) or the study could
not start; 2 bad command line; 3 internal error; 130 / 143 interrupted / terminated (a rerun resumes).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from runtime.models.bundles import model_for
from runtime.cohort.engine import default_threads, default_workers, run_subjects
from runtime.cohort.records import CohortTable, is_done, table_name
from runtime.cohort.subjects import DEFAULT_PATTERN, CohortInputError, check_parts, discover, split_parts
from runtime.errors import InputError
from runtime.checks.input_checks import available_memory_bytes
from runtime.checks.preflight import available_cores, check_writable_dir, open_manifest, resolve_bundle_dir
from runtime.cli import guarded
from runtime.run import _path, add_run_options, check_run_options, request_record
from runtime.session import preview_dependency_check

log = logging.getLogger("tractseg_aot")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m runtime.cohort", description=__doc__.strip().splitlines()[0])
    p.add_argument("inputs", nargs="*", metavar="INPUT", type=_path, help="peaks files or folders to search")
    p.add_argument("-o", dest="output", metavar="OUTROOT", type=_path, required=True, help="study output folder")
    p.add_argument("--list", dest="list_file", metavar="FILE", type=_path,
                   help="one peaks path a line, or CSV with columns subject,peaks")
    p.add_argument("--pattern", default=DEFAULT_PATTERN, help=f"file pattern in folders (default {DEFAULT_PATTERN})")
    add_run_options(p)
    p.add_argument("--workers", type=int, metavar="N", help="worker processes (default: from cores and memory; "
                   "0 runs every subject in this process, without Dask)")
    p.add_argument("--threads-per-worker", type=int, metavar="T",
                   help="backend threads per worker (default: the cores, at most 8)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="run on an existing Dask cluster (tcp://host:8786)")
    p.add_argument("--num-parts", type=int, default=1, metavar="N", help="split the study into N parts")
    p.add_argument("--part-id", type=int, default=0, metavar="K", help="run part K (0 .. N-1)")
    args = p.parse_args(argv)
    check_run_options(p, args)
    if not args.inputs and not args.list_file:
        p.error("give peaks files or folders, or --list FILE")
    if args.threads_per_worker is None:
        args.threads_per_worker = default_threads(available_cores())
    if args.workers is not None and args.workers < 0 or args.threads_per_worker < 1:
        p.error("--workers must be >= 0 and --threads-per-worker >= 1")
    try:
        check_parts(args.num_parts, args.part_id)
    except ValueError as error:
        p.error(str(error))
    if args.nr_cpus == -1:
        args.nr_cpus = args.threads_per_worker
    args.report = None
    return args


def output_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options that shape a subject's outputs (a done-record holds only for the same ones)."""
    return request_record(args)


def study(args: argparse.Namespace) -> int:
    """Run the study; returns the exit status (0 all done, 1 some failed)."""
    from tqdm import tqdm

    model = model_for(args.output_type, args.tract_definition)
    manifest = open_manifest(resolve_bundle_dir(args.artifacts, model), model)
    if manifest.demo_weights:
        log.warning("demo weights, not anatomical (%s): the outputs are not tract segmentations",
                    manifest.weights.source)
    preview_dependency_check(args)
    try:
        subjects = split_parts(discover(args.inputs, args.pattern, args.list_file), args.num_parts, args.part_id)
    except CohortInputError as error:
        raise InputError(str(error)) from None
    outroot = Path(args.output)
    check_writable_dir(outroot)
    outroot.mkdir(parents=True, exist_ok=True)
    options, bundle_id = output_options(args), manifest.bundle_id
    table = CohortTable(outroot / table_name(args.num_parts, args.part_id))
    todo = []
    for subject in subjects:
        row = None if args.force else is_done(outroot / subject.id, subject.peaks, bundle_id, options)
        if row is None:
            todo.append(subject)
        else:
            table.update(row)
    memory = available_memory_bytes()
    workers = args.workers if args.workers is not None else default_workers(
        available_cores(), memory / 2**30 if memory else None, args.threads_per_worker)
    workers = min(workers, len(todo)) if args.scheduler is None else workers
    log.info("%d subject(s): %d done earlier, %d to run on %s", len(subjects), len(subjects) - len(todo), len(todo),
             args.scheduler or (f"{workers} worker(s) x {args.threads_per_worker} thread(s)" if workers
                                else "this process"))
    failed = 0
    with tqdm(total=len(subjects), initial=len(subjects) - len(todo), unit="subject", file=sys.stderr,
              disable=args.quiet, dynamic_ncols=True) as bar:
        try:
            for row in run_subjects(todo, str(outroot), args, bundle_id, options, workers, args.scheduler):
                failed += row["status"] != "done"
                table.update(row)
                bar.update(1)
        finally:
            table.flush()
    if args.statistics:
        from runtime.qc.study_report import write_study_report

        write_study_report(outroot, table.rows())
    failed_rows = [r for r in table.rows() if r["status"] != "done"]
    log.info("%d done, %d failed; %s", len(table.rows()) - len(failed_rows), len(failed_rows), table.path)
    return 1 if failed_rows else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    status = {"code": 0}

    def action() -> None:
        status["code"] = study(args)

    code = guarded(action, args.quiet, final=argv is None)
    return code or status["code"]


if __name__ == "__main__":
    sys.exit(main())
