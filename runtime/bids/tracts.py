"""The BIDS App's ``--chain``: tracking and tractometry of every series, on the peaks its segmentation made.

The chain (:mod:`runtime.chain`: tract_segmentation, endings_segmentation, TOM, tracking, tractometry) takes
peaks, and a BIDS series is a DWI. So the participant level runs the study runner twice over the same series:

1. the raw-DWI run (:func:`runtime.bids.app.run_participants`): ``OUT/tractseg_output/<series>/`` with
   ``peaks.nii.gz`` and the bundle masks;
2. the chain on those peaks (:func:`run_tracts`): ``OUT/tractseg_chain/<series>/`` in upstream's layout
   (``endings_segmentations/``, ``TOM/``, ``TOM_trackings/<bundle>.trx``, ``Tractometry.csv``). Same ids, so the
   same job-array split; resumable as any study (a series whose peaks changed is redone). Its tract step runs the
   tract bundle again on the same peaks (one more network pass per series; the masks linked are the first pass's).

A series whose first pass failed fails its chain too, with one line. Scalar map (``scalar_param``, e.g. ``fa``):
each series' BEP016 map ``..._model-<m>_param-fa_dwimap.nii[.gz]`` in the dataset's ``derivatives/``
(:func:`runtime.bids.layout.find_scalar_map`) is symlinked as ``OUT/tractseg_chain/scalar_maps/<series>.nii[.gz]``,
which the chain's ``scalar_pattern`` names (relative to the peaks' folder); none or two fail that series' chain
alone. Linked under BIDS names (:mod:`runtime.bids.naming`) with sidecars (:mod:`runtime.bids.sidecars`): the
endings masks, the tractograms (BEP046, TRX: the only format the proposal allows) and the tractometry CSV.
"""
from __future__ import annotations

import glob
import json
import os
import secrets
from pathlib import Path

from runtime.bids.derivatives import CHAIN_FOLDER, STUDY_FOLDER, link
from runtime.bids.layout import BidsDwi, find_scalar_map, parse_name
from runtime.bids.naming import ending_name, tractogram_name, tractometry_name
from runtime.bids.sidecars import mask_sidecar, tractogram_sidecar, tractometry_sidecar
from runtime.chain import TRACTOMETRY_CSV, ChainOptions
from runtime.chain.api import bundle_manifests
from runtime.cohort import StudyOptions, Subject, run_study
from runtime.errors import InputError, OutputError
from runtime.host import require_dipy
from runtime.io.nifti_io import PEAKS_FILE
from runtime.tracking.api import TRACKING_FOLDER
from runtime.tracking.api import check_options as check_tracking_options

SCALAR_FOLDER = "scalar_maps"
SCALAR_PATTERN = f"../../{CHAIN_FOLDER}/{SCALAR_FOLDER}/{{subject}}.nii*"  # relative to the peaks' folder


def chain_options(chain: ChainOptions, scalar_param: str | None) -> ChainOptions:
    """The chain as the App runs it, checked before any work (tracking extra, trx-python, the three bundles; one
    line each): TRX tractograms, the staged scalar maps with ``scalar_param``."""
    if chain.tracking.tracking_format != "trx":
        raise InputError(f"tracking_format {chain.tracking.tracking_format!r}: the BIDS App writes TRX "
                         f"tractograms (BEP046 stores tractography as .trx)")
    require_dipy()
    check_tracking_options(chain.tracking)
    bundle_manifests(chain)
    return chain.replace(scalar_pattern=SCALAR_PATTERN if scalar_param else None)


def _stage(output_dir: Path, sid: str, scalar: Path | None) -> None:
    """``scalar_maps/<sid>.nii[.gz]`` -> ``scalar`` (a symlink, replaced atomically); None: no link."""
    folder = output_dir / CHAIN_FOLDER / SCALAR_FOLDER
    keep = None if scalar is None else sid + (".nii.gz" if scalar.name.endswith(".nii.gz") else ".nii")
    for old in folder.glob(f"{glob.escape(sid)}.nii*") if folder.is_dir() else []:
        if old.name in (f"{sid}.nii", f"{sid}.nii.gz") and old.name != keep:
            old.unlink()
    if scalar is not None and keep is not None:
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f".{sid}.{secrets.token_hex(4)}"
        os.symlink(scalar.resolve(), temporary)
        os.replace(temporary, folder / keep)


def chain_subjects(by_id: dict[str, BidsDwi], done: set[str], bids_dir: Path, output_dir: Path,
                   scalar_param: str | None) -> tuple[list[Subject], dict[str, Path]]:
    """Every series as a chain subject (peaks from the first pass; the reason it cannot run as its problem), and
    the scalar map found for each series of ``done``."""
    subjects, scalars = [], {}
    for sid, series in sorted(by_id.items()):
        problem = None
        if sid not in done:
            problem = (f"{series.dwi}: no peaks to track: its segmentation did not finish (see "
                       f"{STUDY_FOLDER}/cohort.csv)")
        elif scalar_param:
            try:
                scalars[sid] = find_scalar_map(bids_dir, series, scalar_param)
            except InputError as error:
                problem = str(error)
            _stage(output_dir, sid, scalars.get(sid))
        subjects.append(Subject(sid, output_dir / STUDY_FOLDER / sid / PEAKS_FILE, None, problem))
    return subjects, scalars


def chain_links(series: BidsDwi, chain_dir: Path, output_dir: Path, bids_dir: Path, chain: ChainOptions,
                scalar: Path | None) -> list[Path]:
    """Link one done chain's endings, tractograms and tractometry CSV under BIDS names, with sidecars."""
    folder = series.output_dir(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    endings = chain.step_options("endings_segmentation")
    for path in sorted((chain_dir / "endings_segmentations").glob("*.nii.gz")):
        region = path.name[: -len(".nii.gz")]
        made += link(path, folder, ending_name(series.name, region),
                     mask_sidecar(series, bids_dir, region, endings))
    for bundle in chain.bundles:
        path = chain_dir / TRACKING_FOLDER / f"{bundle}.trx"
        if path.is_file():
            record_path = path.with_name(path.name + ".json")
            record = json.loads(record_path.read_text()) if record_path.is_file() else {}
            made += link(path, folder, tractogram_name(series.name, bundle),
                         tractogram_sidecar(series, bids_dir, output_dir, chain_dir, bundle, record))
    csv = chain_dir / TRACTOMETRY_CSV
    parsed = parse_name(scalar.name) if scalar is not None else None
    if csv.is_file() and parsed is not None:
        made += link(csv, folder, tractometry_name(series.name, parsed[0]["model"], parsed[0]["param"]),
                     tractometry_sidecar(series, bids_dir, output_dir, chain_dir, scalar, chain.nr_points))
    return made


def run_tracts(by_id: dict[str, BidsDwi], done: set[str], bids_dir: Path, output_dir: Path,
               options: StudyOptions, scalar_param: str | None) -> int:
    """The second pass (module docstring); ``options.per_subject``: the chain from :func:`chain_options`. Returns
    the exit status (1: a series' chain failed)."""
    subjects, scalars = chain_subjects(by_id, done, bids_dir, output_dir, scalar_param)
    outroot = output_dir / CHAIN_FOLDER
    result = run_study(subjects, outroot, options)
    for row in result.rows:
        if row["status"] == "done" and row["subject"] in by_id:
            try:
                chain_links(by_id[row["subject"]], outroot / row["subject"], output_dir, bids_dir,
                            options.per_subject, scalars.get(row["subject"]))
            except OSError as error:
                raise OutputError(f"{output_dir}: cannot link {row['subject']}'s tractograms "
                                  f"({error.strerror or error})") from None
    return result.status
