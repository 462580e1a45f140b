"""The BIDS App's outputs (``python -m runtime.bids BIDS OUT participant|group``, whose runner is
:func:`runtime.bids.app.run_participants`): the study runner over the dataset's diffusion series, then BIDS
derivatives.

participant: every series (:func:`runtime.bids.find_dwis`) is one subject of ``runtime.cohort``'s study runner,
run from its raw DWI (``--raw_diffusion_input`` with the series' own .bval/.bvec and brain mask) into
``OUT/tractseg_output/<source entities>/`` (upstream's layout, resumable: a rerun skips what is done; parts and
workers as the study runner's). Each done series is then linked (hard links, same file system) under BIDS
derivatives names into ``OUT/sub-<p>[/ses-<s>]/dwi/`` (:mod:`runtime.bids.naming`: ``..._label-<bundle>_mask``,
``..._probseg`` with ``--get_probabilities``, endings as ``desc-beginnings|endings`` masks; upstream's
``peaks.nii.gz`` as BEP016's ``..._space-orig_model-csd_param-peaks_dwimap.nii.gz``), and
``OUT/dataset_description.json`` names the generator, the peaks engine used and the kinds of derivatives. Every
linked file has a JSON sidecar (:mod:`runtime.bids.sidecars`), and ``OUT/.bidsignore`` tells a BIDS validator to
pass over ``tractseg_output/`` (and, with ``--chain``, :mod:`runtime.bids.tracts`, ``tractseg_chain/``): upstream's
layout, not BIDS. group: the study table and report (``OUT/tractseg_output/statistics.csv``, ``report.html``) from
the participant runs' ``--statistics``, and with ``--chain`` the chain's (``OUT/tractseg_chain/tractometry.csv``).
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from runtime.bids.layout import BidsDwi
from runtime.bids.naming import ending_name, mask_name, peaks_name, probseg_name, uncertainty_name
from runtime.bids.sidecars import dumps, mask_sidecar, peaks_sidecar
from runtime.io.atomic import write_text_atomic
from runtime.io.nifti_io import PEAKS_FILE, UNCERTAINTY_DIR
from runtime.options import RunOptions

STUDY_FOLDER = "tractseg_output"
CHAIN_FOLDER = "tractseg_chain"


def write_bidsignore(output_dir: Path, chain: bool = False) -> Path:
    """``OUT/.bidsignore`` lists the non-BIDS study folders, ``tractseg_chain/`` too with ``chain`` (lines already
    there are kept)."""
    path = output_dir / ".bidsignore"
    lines = path.read_text().splitlines() if path.is_file() else []
    wanted = [f"{STUDY_FOLDER}/"] + ([f"{CHAIN_FOLDER}/"] if chain else [])
    missing = [line for line in wanted if line not in lines]
    if missing:
        write_text_atomic(path, "".join(f"{line}\n" for line in lines + missing))
    return path


def link(path: Path, folder: Path, name: str, sidecar: dict[str, Any]) -> list[Path]:
    """Hard-link ``path`` as ``folder/name`` (replacing it), and write its JSON sidecar ``<stem>.json``."""
    temporary = folder / f".{name}.{secrets.token_hex(4)}"
    os.link(path, temporary)
    os.replace(temporary, folder / name)
    json_name = name.split(".", 1)[0] + ".json"
    write_text_atomic(folder / json_name, dumps(sidecar))
    return [folder / name, folder / json_name]


def derivative_links(series: BidsDwi, subject_dir: Path, output_dir: Path, options: RunOptions,
                     bids_dir: Path, engine: str | None = None) -> list[Path]:
    """Link one done series' files under their BIDS names, each with its JSON sidecar; returns the names made
    (replaced when present). ``engine``: the peaks engine, for the peaks' sidecar."""
    folder = series.output_dir(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    folders = (options.save.tract_dir, "endings_segmentations", UNCERTAINTY_DIR)
    for path in sorted(p for f in folders for p in (subject_dir / f).glob("*.nii.gz")):
        region = path.name[: -len(".nii.gz")]
        if path.parent.name == "endings_segmentations":
            name = ending_name(series.name, region)
        elif path.parent.name == UNCERTAINTY_DIR:
            name = uncertainty_name(series.name, region)
        else:
            name = (probseg_name if options.save.probabilities else mask_name)(series.name, region)
        made += link(path, folder, name, mask_sidecar(series, bids_dir, region, options))
    peaks = subject_dir / PEAKS_FILE
    if peaks.is_file() and options.raw is not None:
        made += link(peaks, folder, peaks_name(series.name),
                     peaks_sidecar(series, bids_dir, engine or options.raw.peaks_engine, options.raw.csd_type))
    return made
