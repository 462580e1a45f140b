"""The BIDS App as a library: :func:`run_bids` segments every diffusion series of a BIDS dataset through the
study runner (:func:`runtime.cohort.run_study`) and links the results under BIDS derivative names
(:mod:`runtime.bids.derivatives`); the group level writes the study table and report from the participant
outputs. Its command line, ``python -m runtime.bids`` (console script ``tractseg-aot-bids``), only parses."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from runtime.bids.derivatives import STUDY_FOLDER, derivative_links, write_bidsignore
from runtime.bids.layout import BidsDwi, find_dwis
from runtime.bids.naming import dataset_description, write_dataset_description
from runtime.cohort import StudyOptions, Subject, run_study
from runtime.cohort.records import TABLE_NAME, read_cohort_table
from runtime.cohort.report import write_study_report
from runtime.cohort.subjects import safe_id
from runtime.diffusion.api import choose_engine
from runtime.errors import InputError, OutputError
from runtime.host import tool_version

log = logging.getLogger("tractseg_aot")


def plan(bids_dir: str | os.PathLike[str], output_dir: str | os.PathLike[str],
         participants: list[str] | None = None, sessions: list[str] | None = None,
         validate: bool = True) -> list[BidsDwi]:
    """The diffusion series to process; InputError (one line) when the folders or labels are wrong."""
    if Path(output_dir).resolve() == Path(bids_dir).resolve():
        raise InputError(f"{output_dir}: the output folder is the BIDS folder itself; use e.g. "
                         f"{bids_dir}/derivatives/tractseg-aot")
    return find_dwis(Path(bids_dir).resolve(), participants, sessions, require_description=validate)


def run_group(output_dir: str | os.PathLike[str]) -> int:
    """The group level: the study table and report over the participant outputs; the exit status."""
    outroot = Path(output_dir) / STUDY_FOLDER
    try:
        rows = read_cohort_table(outroot / TABLE_NAME)
    except ValueError as error:
        raise InputError(f"{error} (run the participant level first)") from None
    table, page = write_study_report(outroot, rows)
    failed = [row["subject"] for row in rows if row["status"] != "done"]
    (log.warning if failed else log.info)("group level over %d series (%d failed): %s, %s", len(rows), len(failed),
                                          page, table)
    return 1 if failed else 0


def run_participants(series: list[BidsDwi], bids_dir: str | os.PathLike[str], output_dir: str | os.PathLike[str],
                     options: StudyOptions) -> int:
    """The participant level: every series through the study runner (raw DWI input, each with its own bvals,
    bvecs and mask), then its outputs linked under BIDS names; the exit status."""
    if not series:
        raise InputError(f"{bids_dir}: no diffusion series to process")
    output_dir = Path(output_dir)
    outroot = output_dir / STUDY_FOLDER
    output_dir.mkdir(parents=True, exist_ok=True)
    per_subject = options.per_subject
    engine = choose_engine(per_subject.raw.peaks_engine)  # the engine used, not "auto"
    write_dataset_description(output_dir, dataset_description(tool_version(), peaks_engine=engine))
    write_bidsignore(output_dir)
    by_id = {safe_id(s.name): s for s in series}
    subjects = [Subject(sid, s.dwi, (str(s.bval), str(s.bvec), str(s.brain_mask) if s.brain_mask else None),
                        s.problem) for sid, s in sorted(by_id.items())]
    result = run_study(subjects, outroot, options)
    for row in result.rows:
        if row["status"] == "done" and row["subject"] in by_id:
            try:
                derivative_links(by_id[row["subject"]], outroot / row["subject"], output_dir, per_subject,
                                 Path(bids_dir))
            except OSError as error:
                raise OutputError(f"{output_dir}: cannot link {row['subject']}'s derivatives "
                                  f"({error.strerror or error})") from None
    return result.status
