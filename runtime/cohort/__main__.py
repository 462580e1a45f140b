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
import os
import sys
from pathlib import Path

from runtime.checks.input_checks import available_memory_bytes
from runtime.checks.preflight import available_cores, check_writable_dir, open_manifest, resolve_bundle_dir
from runtime.chain.cli import add_chain_arguments, chain_options
from runtime.cli import add_run_options, command_parser, guarded, path_arg, run_options
from runtime.cohort.engine import default_threads, default_workers, run_subjects
from runtime.cohort.records import (RESERVED_NAMES, CohortTable, DoneCheck, read_done_record, reserved_name,
                                    table_name)
from runtime.cohort.subjects import (DEFAULT_PATTERN, CohortInputError, Subject, check_parts, discover,
                                     split_parts)
from runtime.errors import InputError, OutputError
from runtime.options import RunOptions
from runtime.outputs.output_set import COMMITTED, folder_lock
from runtime.qc.collectors import preview_dependency_check

log = logging.getLogger("tractseg_aot")


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, RunOptions]:
    p = command_parser("tractseg-aot-cohort", "runtime.cohort", __doc__)
    p.add_argument("inputs", nargs="*", metavar="INPUT", type=path_arg, help="peaks files or folders to search")
    p.add_argument("-o", dest="output", metavar="OUTROOT", type=path_arg, required=True, help="study output folder")
    p.add_argument("--list", dest="list_file", metavar="FILE", type=path_arg,
                   help="one peaks path a line, or CSV with columns subject,peaks")
    p.add_argument("--pattern", default=DEFAULT_PATTERN, help=f"file pattern in folders (default {DEFAULT_PATTERN})")
    add_run_options(p)
    c = p.add_argument_group("the whole chain per subject (runtime.chain): segmentation, endings, TOM, tracking, "
                             "tractometry; OUTROOT/tractometry.csv merges the subjects' Tractometry.csv")
    c.add_argument("--chain", action="store_true", help="run the whole chain for every subject")
    c.add_argument("--scalar-pattern", dest="scalar_pattern", metavar="PATTERN",
                   help="each subject's scalar map (e.g. FA): a glob relative to its peaks file's folder, {subject} "
                        "for its id, e.g. '*_FA.nii.gz'; without it the chain stops after tracking")
    add_chain_arguments(p)
    p.add_argument("--workers", type=int, metavar="N", help="worker processes (default: from cores and memory; "
                   "0 runs every subject in this process, without Dask)")
    p.add_argument("--threads-per-worker", type=int, metavar="T",
                   help="backend threads per worker (default: the cores, at most 8)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="run on an existing Dask cluster (tcp://host:8786)")
    p.add_argument("--num-parts", type=int, default=1, metavar="N", help="split the study into N parts")
    p.add_argument("--part-id", type=int, default=0, metavar="K", help="run part K (0 .. N-1)")
    args = p.parse_args(argv)
    options = run_options(p, args)
    if options.bvals or options.bvecs or options.brain_mask:
        p.error("--bvals / --bvecs / --brain_mask name one subject's files: the study runner takes each subject's "
                "from beside its DWI (upstream's <name>.bvals / .bvecs / nodif_brain_mask.nii.gz)")
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
    if options.threads is None:
        options = options.replace(threads=args.threads_per_worker)
    args.chain_options = None
    if args.chain:
        if options.artifacts is not None or options.output_type != "tract_segmentation":
            p.error("--chain runs three bundles: name them with --artifacts-root or --tract-artifacts / "
                    "--endings-artifacts / --tom-artifacts, not --artifacts / --output_type")
        args.chain_options = chain_options(p, args, options, args.scalar_pattern)
    elif args.scalar_pattern:
        p.error("--scalar-pattern is for --chain")
    return args, options


def check_outroot(outroot: Path) -> None:
    """OUTROOT's own files can be written: none of them is a directory (made by hand, or by a subject id)."""
    for name in RESERVED_NAMES:
        if (outroot / name).is_dir():
            raise OutputError(f"{outroot / name}: is a directory; the study writes its {name} there, move it away")


def study(args: argparse.Namespace, options: RunOptions) -> int:
    """Run the study; returns the exit status (0 all done, 1 some failed)."""
    model = options.model
    if args.chain_options is not None:
        bundle_id, manifests = chain_bundles(args.chain_options)
    else:
        manifests = [open_manifest(resolve_bundle_dir(options.artifacts, model), model)]
        bundle_id = manifests[0].bundle_id
    for manifest in manifests:
        if manifest.demo_weights:
            log.warning("demo weights, not anatomical (%s): the outputs are not tract segmentations",
                        manifest.weights.source)
            break
    preview_dependency_check(options.preview)
    outroot = Path(args.output)
    try:
        subjects = split_parts(discover(args.inputs, args.pattern, args.list_file, exclude=outroot),
                               args.num_parts, args.part_id)
    except CohortInputError as error:
        raise InputError(str(error)) from None
    return run_study(args, options, subjects, outroot, bundle_id)


def run_study(args: argparse.Namespace, options: RunOptions, subjects: list[Subject], outroot: Path,
              bundle_id: str) -> int:
    """Run ``subjects`` into ``outroot`` (locked for the run); ``args``: workers, threads_per_worker, scheduler,
    num_parts, part_id. Returns the exit status (0 all done, 1 some failed). runtime.bids runs its series here."""
    from tqdm import tqdm

    for subject in subjects:
        if reserved_name(subject.id):
            raise InputError(f"{subject.peaks}: its subject id {subject.id!r} is one of the study's own file names "
                             f"under OUTROOT; give it another id with a --list CSV of subject,peaks")
    check_writable_dir(outroot)
    outroot.mkdir(parents=True, exist_ok=True)
    check_outroot(outroot)
    with folder_lock(outroot):  # one study at a time on an output root (each subject folder has its own lock)
        return _run(args, options, subjects, outroot, bundle_id, tqdm)


def _run(args: argparse.Namespace, options: RunOptions, subjects: list, outroot: Path, bundle_id: str,
         tqdm) -> int:
    chain = getattr(args, "chain_options", None)  # runtime.bids runs plain studies with its own args
    done = DoneCheck(bundle_id, chain.output_record() if chain is not None else options.output_record())
    table = CohortTable(outroot / table_name(args.num_parts, args.part_id))
    todo, root = [], str(outroot)
    for subject in subjects:
        row = None if options.force else done(os.path.join(root, subject.id), subject.peaks)
        if row is not None and chain is not None and not scalar_unchanged(root, subject, chain):
            row = None
        if row is None:
            todo.append(subject)
        else:
            table.update(row, write=False)
    if len(table) or table.path.exists():  # the table on disk must not call a subject done while it is redone
        table.flush()
    memory = available_memory_bytes()
    workers = args.workers if args.workers is not None else default_workers(
        available_cores(), memory / 2**30 if memory else None, args.threads_per_worker, options.raw_diffusion_input)
    workers = min(workers, len(todo)) if args.scheduler is None else workers
    log.info("%d subject(s): %d done earlier, %d to run on %s", len(subjects), len(subjects) - len(todo), len(todo),
             args.scheduler or (f"{workers} worker(s) x {args.threads_per_worker} thread(s)" if workers
                                else "this process"))
    with tqdm(total=len(subjects), initial=len(subjects) - len(todo), unit="subject", file=sys.stderr,
              disable=options.quiet, dynamic_ncols=True) as bar:
        try:
            for row in run_subjects(todo, str(outroot), options, bundle_id, workers, args.scheduler, chain):
                table.update(row)
                if row.done:
                    COMMITTED.append(outroot / row.subject)  # what an interrupt reports as written
                for line in filter(None, row.warnings.split(" | ")):
                    tqdm.write(f"tractseg-aot: warning: {row.subject}: {line}", file=sys.stderr)
                if not row.done and not options.quiet:
                    tqdm.write(f"tractseg-aot: {row.subject} failed: {row.error}", file=sys.stderr)
                bar.update(1)
        except BaseException:  # SIGINT / SIGTERM (and a bug): say truly what is on disk
            _done_on_disk(todo, root, table)
            raise
        finally:
            if len(table):
                table.flush()
    if chain is not None:
        chain_study_outputs(chain, outroot, table.rows(), args.num_parts)
    if options.statistics or chain is not None:
        from runtime.qc.study_report import write_study_report

        write_study_report(outroot, table.rows())
    failed_rows = [r for r in table.rows() if r["status"] != "done"]
    (log.warning if failed_rows else log.info)("%d done, %d failed; %s", len(table.rows()) - len(failed_rows),
                                               len(failed_rows), table.path)
    return 1 if failed_rows else 0


def scalar_unchanged(root: str, subject, chain) -> bool:
    from runtime.cohort.chain_subject import scalar_unchanged as unchanged

    return unchanged(os.path.join(root, subject.id), str(subject.peaks), subject.id, chain)


def chain_bundles(chain) -> tuple[str, list]:
    """The chain's three bundles checked (one line if one is missing or not its model), and their joined id."""
    from runtime.chain.api import bundle_manifests
    from runtime.tracking.extra import require_dipy

    require_dipy()
    manifests = [manifest for _, manifest in bundle_manifests(chain)]
    if not chain.scalar_pattern:
        log.info("--chain without --scalar-pattern: each subject's chain stops after tracking (no Tractometry.csv)")
    return "+".join(m.bundle_id for m in manifests), manifests


def chain_study_outputs(chain, outroot: Path, rows: list, num_parts: int) -> None:
    """OUTROOT/tractometry.csv from the done subjects' Tractometry.csv (a plain run; a job-array part leaves it to
    the plain run that merges the parts)."""
    if chain.scalar_pattern and num_parts == 1:
        from runtime.cohort.study_table import write_study_table

        path, merged = write_study_table(outroot, rows)
        log.info("study tractometry table of %d subject(s): %s", merged, path)


def _done_on_disk(todo: list, root: str, table: CohortTable) -> None:
    """On SIGINT / SIGTERM: the subjects a worker finished whose row had not reached this process yet (their
    done-records are on disk) join the table and what the interrupt reports as written."""
    known = {str(path) for path in COMMITTED}
    for subject in todo:
        folder = os.path.join(root, subject.id)
        record = read_done_record(folder) if folder not in known else None
        if record is not None and isinstance(record.get("row"), dict):
            COMMITTED.append(Path(folder))
            table.update(record["row"], write=False)


def main(argv: list[str] | None = None) -> int:
    args, options = parse_args(argv)
    status = {"code": 0}

    def action() -> None:
        status["code"] = study(args, options)

    code = guarded(action, options.quiet, final=argv is None)
    return code or status["code"]


if __name__ == "__main__":
    sys.exit(main())
