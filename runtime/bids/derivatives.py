"""The BIDS App's outputs (``python -m runtime.bids BIDS OUT participant|group``, whose runner is
:func:`runtime.bids.app.run_participants`): the study runner over the dataset's diffusion series, then BIDS
derivatives.

participant: every series (:func:`runtime.bids.find_dwis`) is one subject of ``runtime.cohort``'s study runner,
run from its raw DWI (``--raw_diffusion_input`` with the series' own .bval/.bvec and brain mask) into
``OUT/tractseg_output/<source entities>/`` (upstream's layout, resumable: a rerun skips what is done; parts and
workers as the study runner's). Each done series is then linked (hard links, same file system) under BIDS
derivatives names into ``OUT/sub-<p>[/ses-<s>]/dwi/`` (:mod:`runtime.bids.naming`: ``..._label-<bundle>_mask``,
``..._probseg`` with ``--get_probabilities``, endings as ``desc-beginnings|endings`` masks), and
``OUT/dataset_description.json`` names the generator and the peaks engine used. Every linked file has a JSON
sidecar (``Sources``: the DWI as a BIDS URI; the bundle; the model), and ``OUT/.bidsignore`` tells a BIDS
validator to pass over ``tractseg_output/`` (upstream's layout, not BIDS). group: the study table and report
(``OUT/tractseg_output/statistics.csv``, ``report.html``) from the participant runs' ``--statistics``.
"""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from runtime.bids.layout import BidsDwi
from runtime.bids.naming import ending_name, mask_name, probseg_name
from runtime.io.atomic import write_text_atomic
from runtime.options import RunOptions

STUDY_FOLDER = "tractseg_output"
BIDSIGNORE = f"{STUDY_FOLDER}/\n"


def write_bidsignore(output_dir: Path) -> Path:
    """``OUT/.bidsignore`` lists the non-BIDS study folder (kept when it already does)."""
    path = output_dir / ".bidsignore"
    lines = path.read_text().splitlines() if path.is_file() else []
    if BIDSIGNORE.strip() not in lines:
        write_text_atomic(path, "".join(f"{line}\n" for line in lines) + BIDSIGNORE)
    return path


def sidecar(series: BidsDwi, bids_dir: Path, region: str, options: RunOptions) -> str:
    """A derivative's JSON sidecar: where it came from and what it is."""
    source = series.dwi.resolve().relative_to(bids_dir.resolve()).as_posix()
    return json.dumps({"Sources": [f"bids:raw:{source}"], "Bundle": region,
                       "Model": options.model.name, "Description": "TractSeg bundle segmentation (tractseg-aot)"},
                      indent=1) + "\n"


def derivative_links(series: BidsDwi, subject_dir: Path, output_dir: Path, options: RunOptions,
                     bids_dir: Path) -> list[Path]:
    """Link one done series' files under their BIDS names, each with its JSON sidecar; returns the names made
    (replaced when present)."""
    folder = series.output_dir(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for path in sorted(subject_dir.glob("*_segmentations/*.nii.gz")):
        region = path.name[: -len(".nii.gz")]
        if path.parent.name == "endings_segmentations":
            name = ending_name(series.name, region)
        else:
            name = (probseg_name if options.save.probabilities else mask_name)(series.name, region)
        temporary = folder / f".{name}.{secrets.token_hex(4)}"
        os.link(path, temporary)
        os.replace(temporary, folder / name)
        json_name = name[: -len(".nii.gz")] + ".json"
        write_text_atomic(folder / json_name, sidecar(series, bids_dir, region, options))
        made += [folder / name, folder / json_name]
    return made
