"""The study runner as a library: ``run_study(inputs, outroot, StudyOptions(...))``. Its command line
(``python -m runtime.cohort``) and the BIDS App (``python -m runtime.bids``) only build the options and call it.

``OUTROOT/<subject>/`` holds exactly what ``runtime.run -o`` writes (or the whole chain's outputs);
``OUTROOT/cohort.csv`` one row per subject. A rerun skips subjects whose done-record still matches (input size +
mtime, bundle, options) and redoes the rest; ``force`` redoes all. ``num_parts`` / ``part_id`` run one part of a
deterministic split (job arrays); parts may run at the same time (:mod:`runtime.cohort.study_lock`), each with its
own table, and a later plain run merges them.
"""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.chain import ChainOptions
from runtime.chain.api import bundle_manifests
from runtime.checks.input_checks import available_memory_bytes
from runtime.checks.preflight import check_writable_dir, find_manifest, warn_if_demo
from runtime.cohort.chain_subject import scalar_unchanged as chain_scalar_unchanged
from runtime.cohort.engine import default_workers, run_subjects
from runtime.cohort.records import (RESERVED_NAMES, CohortTable, DoneCheck, is_done, read_done_record,
                                    reserved_name, table_name)
from runtime.cohort.report import write_study_report
from runtime.cohort.study_lock import study_key, study_lock
from runtime.cohort.study_options import StudyOptions
from runtime.cohort.parts import split_parts
from runtime.cohort.subjects import CohortInputError, Subject, discover
from runtime.cohort.tractometry_table import write_study_table
from runtime.cohort.worker import with_gradients
from runtime.errors import InputError, OutputError
from runtime.host import available_cores, require_dipy
from runtime.outputs.output_set import COMMITTED
from runtime.qc.collectors import preview_dependency_check

log = logging.getLogger("tractseg_aot")


@dataclass(frozen=True)
class StudyResult:
    """What a study run left: every row of its table (this part's, for a job-array part) and the table's path."""

    rows: tuple[dict[str, Any], ...]
    table: Path

    @property
    def failed(self) -> list[str]:
        return [row["subject"] for row in self.rows if row["status"] != "done"]

    @property
    def status(self) -> int:
        """The command line's exit status: 0 every subject done, 1 some failed."""
        return 1 if self.failed else 0


def check_outroot(outroot: Path) -> None:
    """OUTROOT's own files can be written: none of them is a directory (made by hand, or by a subject id)."""
    for name in RESERVED_NAMES:
        if (outroot / name).is_dir():
            raise OutputError(f"{outroot / name}: is a directory; the study writes its {name} there, move it away")


def study_subjects(inputs: Sequence[str | os.PathLike[str] | Subject], outroot: Path,
                   options: StudyOptions) -> list[Subject]:
    """This part's subjects: those given as :class:`Subject`, and those found in the paths (``options.pattern``
    in folders) and ``options.list_file``."""
    given = [item for item in inputs if isinstance(item, Subject)]
    paths = [item for item in inputs if not isinstance(item, Subject)]
    try:
        found = discover(paths, options.pattern, options.list_file, exclude=outroot) \
            if paths or options.list_file else []
    except CohortInputError as error:
        raise InputError(str(error)) from None
    return split_parts(given + found, options.num_parts, options.part_id)


def bundles_of(per_subject: Any) -> tuple[str, list]:
    """The study's bundles checked (one line if one is missing or not its model), and their joined id."""
    if isinstance(per_subject, ChainOptions):
        require_dipy()
        manifests = [manifest for _, manifest in bundle_manifests(per_subject)]
        if not per_subject.scalar_pattern:
            log.info("--chain without --scalar-pattern: each subject's chain stops after tracking "
                     "(no Tractometry.csv)")
    else:
        manifests = [find_manifest(per_subject.artifacts, per_subject.model)]
    return "+".join(m.bundle_id for m in manifests), manifests


def run_study(inputs: Sequence[str | os.PathLike[str] | Subject], outroot: str | os.PathLike[str],
              options: StudyOptions = StudyOptions()) -> StudyResult:
    """Run a study into ``outroot`` (see the module docstring). ``inputs``: peaks files or folders (searched
    with ``options.pattern``), or :class:`runtime.cohort.subjects.Subject` items (the BIDS App's, with their own
    bvals/bvecs/mask). Raises TractSegError when the study cannot start; a subject's failure is its row's."""
    per_subject = options.subject_options()
    bundle_id, manifests = bundles_of(per_subject)
    demo = next((m for m in manifests if m.demo_weights), None)
    if demo is not None:
        warn_if_demo(demo)  # once for the study; the workers stay quiet about it
    preview_dependency_check(per_subject.qc.preview)
    outroot = Path(outroot)
    subjects = study_subjects(inputs, outroot, options)
    for subject in subjects:
        if reserved_name(subject.id):
            raise InputError(f"{subject.peaks}: its subject id {subject.id!r} is one of the study's own file names "
                             f"under OUTROOT; give it another id with a --list CSV of subject,peaks")
    check_writable_dir(outroot)
    outroot.mkdir(parents=True, exist_ok=True)
    check_outroot(outroot)
    key = study_key(bundle_id, per_subject.output_record(), options.num_parts)
    with study_lock(outroot, key, options.num_parts, options.part_id):
        return _run(options, per_subject, subjects, outroot, bundle_id)


def _run(options: StudyOptions, per_subject: Any, subjects: list[Subject], outroot: Path,
         bundle_id: str) -> StudyResult:
    from tqdm import tqdm

    chain = per_subject if isinstance(per_subject, ChainOptions) else None
    done = DoneCheck(bundle_id, per_subject.output_record())
    table = CohortTable(outroot / table_name(options.num_parts, options.part_id))
    todo, root = [], str(outroot)
    for subject in subjects:
        folder = os.path.join(root, subject.id)
        if per_subject.force:
            row = None
        elif subject.gradients is None:
            row = done(folder, subject.peaks)
        else:  # a BIDS series: its own bvals / bvecs / mask are part of what made its outputs
            shaping = with_gradients(per_subject, subject.gradients).output_record()
            row = is_done(folder, subject.peaks, bundle_id, shaping)
        if row is not None and chain is not None and not scalar_unchanged(root, subject, chain):
            row = None
        if row is None:
            todo.append(subject)
        else:
            table.update(row, write=False)
    if len(table) or table.path.exists():  # the table on disk must not call a subject done while it is redone
        table.flush()
    memory = available_memory_bytes()
    threads = per_subject.backend.threads
    workers = options.workers if options.workers is not None else default_workers(
        available_cores(), memory / 2**30 if memory else None, threads,
        chain is None and per_subject.raw is not None)
    workers = min(workers, len(todo)) if options.scheduler is None else workers
    log.info("%d subject(s): %d done earlier, %d to run on %s", len(subjects), len(subjects) - len(todo), len(todo),
             options.scheduler or (f"{workers} worker(s) x {threads} thread(s)" if workers else "this process"))
    with tqdm(total=len(subjects), initial=len(subjects) - len(todo), unit="subject", file=sys.stderr,
              disable=per_subject.quiet, dynamic_ncols=True) as bar:
        try:
            for row in run_subjects(todo, str(outroot), per_subject, bundle_id, workers, options.scheduler):
                table.update(row)
                if row.done:
                    COMMITTED.append(outroot / row.subject)  # what an interrupt reports as written
                    if workers and not per_subject.quiet:  # the workers run quietly: one line a subject here
                        tqdm.write(f"tractseg-aot: {row.subject} done in {row.seconds} s", file=sys.stderr)
                for line in filter(None, row.warnings.split(" | ")):
                    tqdm.write(f"tractseg-aot: warning: {row.subject}: {line}", file=sys.stderr)
                if not row.done and not per_subject.quiet:
                    tqdm.write(f"tractseg-aot: {row.subject} failed: {row.error}", file=sys.stderr)
                bar.update(1)
        except BaseException:  # SIGINT / SIGTERM (and a bug): say truly what is on disk
            _done_on_disk(todo, root, table)
            raise
        finally:
            if len(table):
                table.flush()
    if chain is not None and chain.scalar_pattern and options.num_parts == 1:
        path, merged = write_study_table(outroot, table.rows())
        log.info("study tractometry table of %d subject(s): %s", merged, path)
    if per_subject.qc.statistics or chain is not None:
        _, page = write_study_report(outroot, table.rows())
        log.info("study report: %s", page)
    result = StudyResult(tuple(table.rows()), table.path)
    (log.warning if result.failed else log.info)("%d done, %d failed; %s", len(result.rows) - len(result.failed),
                                                 len(result.failed), table.path)
    return result


def scalar_unchanged(root: str, subject: Subject, chain: ChainOptions) -> bool:
    return chain_scalar_unchanged(os.path.join(root, subject.id), str(subject.peaks), subject.id, chain)


def _done_on_disk(todo: list[Subject], root: str, table: CohortTable) -> None:
    """On SIGINT / SIGTERM: the subjects a worker finished whose row had not reached this process yet (their
    done-records are on disk) join the table and what the interrupt reports as written."""
    known = {str(path) for path in COMMITTED}
    for subject in todo:
        folder = os.path.join(root, subject.id)
        record = read_done_record(folder) if folder not in known else None
        if record is not None and isinstance(record.get("row"), dict):
            COMMITTED.append(Path(folder))
            table.update(record["row"], write=False)
