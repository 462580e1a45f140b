"""The BIDS App as a library: :func:`run_participants` segments every diffusion series of a BIDS dataset through the
study runner (:func:`runtime.cohort.run_study`) and links the results under BIDS derivative names
(:mod:`runtime.bids.derivatives`); with ``chain`` it then tracks and profiles them (:mod:`runtime.bids.tracts`).
The group level writes the study table and report from the participant outputs. Its command line,
``python -m runtime.bids`` (console script ``tractseg-aot-bids``), only parses."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from runtime.bids.derivatives import CHAIN_FOLDER, STUDY_FOLDER, derivative_links, write_bidsignore
from runtime.bids.layout import BidsDwi, find_dwis
from runtime.bids.naming import dataset_description, write_dataset_description
from runtime.bids.tracts import chain_options, run_tracts
from runtime.chain import TRACTOMETRY_CSV, ChainOptions
from runtime.cohort import StudyOptions, Subject, run_study
from runtime.cohort.records import TABLE_NAME, read_cohort_table
from runtime.cohort.report import write_study_report
from runtime.cohort.subjects import safe_id
from runtime.cohort.tractometry_table import write_study_table
from runtime.diffusion.api import choose_engine
from runtime.errors import InputError, OutputError
from runtime.host import tool_version
from runtime.options import RunOptions

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
    """The group level: the study table and report over the participant outputs (and over the chain's, with its
    tractometry table, when the participant level ran ``--chain``); the exit status."""
    failed = 0
    for folder in (STUDY_FOLDER, CHAIN_FOLDER):
        outroot = Path(output_dir) / folder
        if folder == CHAIN_FOLDER and not (outroot / TABLE_NAME).is_file():
            continue
        try:
            rows = read_cohort_table(outroot / TABLE_NAME)
        except ValueError as error:
            raise InputError(f"{error} (run the participant level first)") from None
        if any((outroot / row["subject"] / TRACTOMETRY_CSV).is_file() for row in rows if row["status"] == "done"):
            write_study_table(outroot, rows)
        table, page = write_study_report(outroot, rows)
        bad = [row["subject"] for row in rows if row["status"] != "done"]
        failed += len(bad)
        (log.warning if bad else log.info)("group level over %d series (%d failed): %s, %s", len(rows), len(bad),
                                           page, table)
    return 1 if failed else 0


def run_participants(series: list[BidsDwi], bids_dir: str | os.PathLike[str], output_dir: str | os.PathLike[str],
                     options: StudyOptions, chain: ChainOptions | None = None,
                     scalar_param: str | None = None) -> int:
    """The participant level: every series through the study runner (raw DWI input, each with its own bvals,
    bvecs and mask), then its outputs linked under BIDS names; with ``chain``, then the chain on each series'
    peaks (:mod:`runtime.bids.tracts`; its tract bundle is the first pass's too), profiling each series' BEP016
    ``param-<scalar_param>`` map. Returns the exit status."""
    if not series:
        raise InputError(f"{bids_dir}: no diffusion series to process")
    output_dir = Path(output_dir)
    outroot = output_dir / STUDY_FOLDER
    per_subject = options.per_subject
    if chain is not None:  # every check of the chain before any work
        if per_subject.output_type != "tract_segmentation":
            raise InputError(f"the chain's first pass is tract_segmentation, not {per_subject.output_type}")
        chain = chain_options(chain, scalar_param)
        per_subject = per_subject.replace(artifacts=str(chain.bundle_dir("tract_segmentation")))
        options = options.replace(per_subject=per_subject)
    output_dir.mkdir(parents=True, exist_ok=True)
    engine = choose_engine(per_subject.raw.peaks_engine)  # the engine used, not "auto"
    write_dataset_description(output_dir, dataset_description(tool_version(), peaks_engine=engine,
                                                              kinds=_kinds(per_subject, chain)))
    write_bidsignore(output_dir, chain=chain is not None)
    by_id = {safe_id(s.name): s for s in series}
    subjects = [Subject(sid, s.dwi, (str(s.bval), str(s.bvec), str(s.brain_mask) if s.brain_mask else None),
                        s.problem) for sid, s in sorted(by_id.items())]
    result = run_study(subjects, outroot, options)
    done = set()
    for row in result.rows:
        if row["status"] == "done" and row["subject"] in by_id:
            done.add(row["subject"])
            try:
                derivative_links(by_id[row["subject"]], outroot / row["subject"], output_dir, per_subject,
                                 Path(bids_dir), engine)
            except OSError as error:
                raise OutputError(f"{output_dir}: cannot link {row['subject']}'s derivatives "
                                  f"({error.strerror or error})") from None
    if chain is None:
        return result.status
    tracked = run_tracts(by_id, done, Path(bids_dir), output_dir, options.replace(per_subject=chain), scalar_param)
    return max(result.status, tracked)


def _kinds(run: RunOptions, chain: ChainOptions | None) -> list[str]:
    """What this run writes, as :data:`runtime.bids.naming.DERIVATIVE_KINDS` keys."""
    tract = "uncertainty" if run.uncertainty else "probseg" if run.save.probabilities else "mask"
    kinds = {"tract_segmentation": [tract],
             "endings_segmentation": ["endings"]}.get(run.output_type, []) + ["peaks"]
    if chain is not None:
        kinds += ["endings", "tractogram"] + (["tractometry"] if chain.scalar_pattern else [])
    return list(dict.fromkeys(kinds))
