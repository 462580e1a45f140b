"""The BIDS App's runner (``python -m runtime.bids BIDS OUT participant|group``): the study runner over the
dataset's diffusion series, then BIDS derivatives.

participant: every series (:func:`runtime.bids.find_dwis`) is one subject of ``runtime.cohort``'s study runner,
run from its raw DWI (``--raw_diffusion_input`` with the series' own .bval/.bvec and brain mask) into
``OUT/tractseg_output/<source entities>/`` (upstream's layout, resumable: a rerun skips what is done; parts and
workers as the study runner's). Each done series is then linked (hard links, same file system) under BIDS
derivatives names into ``OUT/sub-<p>[/ses-<s>]/dwi/`` (:mod:`runtime.bids.naming`: ``..._label-<bundle>_mask``,
``..._probseg`` with ``--get_probabilities``, endings as ``desc-beginnings|endings`` masks), and
``OUT/dataset_description.json`` names the generator. group: the study table and report
(``OUT/tractseg_output/statistics.csv``, ``report.html``) from the participant runs' ``--statistics``.
"""
from __future__ import annotations

import argparse
import os
import secrets
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from runtime.bids.layout import BidsDwi
from runtime.bids.naming import (dataset_description, ending_name, mask_name, probseg_name,
                                 write_dataset_description)
from runtime.errors import InputError, OutputError
from runtime.options import RunOptions

STUDY_FOLDER = "tractseg_output"


def derivative_links(series: BidsDwi, subject_dir: Path, output_dir: Path, options: RunOptions) -> list[Path]:
    """Link one done series' files under their BIDS names; returns the names made (replaced when present)."""
    folder = series.output_dir(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for path in sorted(subject_dir.glob("*_segmentations/*.nii.gz")):
        region = path.name[: -len(".nii.gz")]
        if path.parent.name == "endings_segmentations":
            name = ending_name(series.name, region)
        else:
            name = (probseg_name if options.get_probabilities else mask_name)(series.name, region)
        temporary = folder / f".{name}.{secrets.token_hex(4)}"
        os.link(path, temporary)
        os.replace(temporary, folder / name)
        made.append(folder / name)
    return made


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
