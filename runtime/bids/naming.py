"""BIDS derivatives names for our outputs and the ``dataset_description.json`` of the output folder.

Names (BIDS 1.10 derivatives, "Imaging data types": ``src/derivatives/imaging.md`` of bids-specification):

- Masks: ``<source_entities>[_space-<space>][_res-..][_den-..][_label-<label>][_desc-<label>]_mask.nii.gz``; "If no
  transformation has taken place, the value of space SHOULD be set to orig", and "If the mask is an ROI mask
  derived from a ... segmentation, then the label entity SHOULD be used to specify the masked structure". Our
  masks are on the DWI's own grid, so: ``sub-01_space-orig_label-CSTleft_mask.nii.gz``.
- Probabilistic segmentations: ``<source_entities>[_space-<space>][_seg-..][_res-..][_den-..][_label-<label>]_probseg
  .nii.gz``, "If a single structure is included, the label entity SHOULD be used": ``..._label-CSTleft_probseg``.
- A BIDS ``<label>`` is alphanumeric only (an underscore would end the entity), so a bundle name loses its
  underscores: ``CST_left`` -> ``CSTleft``, ``CC_1`` -> ``CC1`` (:func:`bids_label`; unique over each bundle list,
  checked). Tract endings (``<bundle>_b`` / ``_e``) are masks with ``desc-beginnings`` / ``desc-endings``.
- ``dataset_description.json``: ``DatasetType`` "derivative" and ``GeneratedBy`` (REQUIRED for derivatives) naming
  tractseg-aot, its version, and (optional field) the peaks engine.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from runtime.errors import OutputError
from runtime.io.atomic import write_text_atomic

BIDS_VERSION = "1.10.0"
SPACE = "orig"
ENDING_DESC = {"b": "beginnings", "e": "endings"}


def bids_label(name: str) -> str:
    """A bundle name as a BIDS label: letters and digits only (``CST_left`` -> ``CSTleft``)."""
    label = re.sub(r"[^A-Za-z0-9]", "", name)
    if not label:
        raise ValueError(f"bundle name {name!r} has no letters or digits")
    return label


def bids_labels(names: Iterable[str]) -> dict[str, str]:
    """bundle name -> BIDS label for a whole list; two names that collapse to one label are an error."""
    labels: dict[str, str] = {}
    seen: dict[str, str] = {}
    for name in names:
        label = bids_label(name)
        if label in seen:
            raise ValueError(f"bundle names {seen[label]!r} and {name!r} both become BIDS label {label!r}")
        seen[label] = name
        labels[name] = label
    return labels


def derivative_name(source: str, suffix: str, *, label: str | None = None, desc: str | None = None,
                    space: str = SPACE, extension: str = ".nii.gz") -> str:
    """``<source>_space-<space>[_label-<label>][_desc-<desc>]_<suffix><extension>`` (entity order of the spec's
    mask template; ``source`` is e.g. ``sub-01_ses-1_run-1``)."""
    for value in (space, label, desc, suffix):
        if value is not None and not re.fullmatch(r"[A-Za-z0-9]+", value):
            raise ValueError(f"{value!r} is not a BIDS label (letters and digits only)")
    parts = [source, f"space-{space}"]
    parts += [f"label-{label}"] if label else []
    parts += [f"desc-{desc}"] if desc else []
    return "_".join(parts) + f"_{suffix}{extension}"


def mask_name(source: str, bundle: str) -> str:
    """A tract mask: ``sub-01_space-orig_label-CSTleft_mask.nii.gz``."""
    return derivative_name(source, "mask", label=bids_label(bundle))


def probseg_name(source: str, bundle: str) -> str:
    """A tract probability map: ``sub-01_space-orig_label-CSTleft_probseg.nii.gz``."""
    return derivative_name(source, "probseg", label=bids_label(bundle))


def ending_name(source: str, region: str) -> str:
    """An endings region ``CST_left_b`` -> ``sub-01_space-orig_label-CSTleft_desc-beginnings_mask.nii.gz``."""
    bundle, _, end = region.rpartition("_")
    if end not in ENDING_DESC or not bundle:
        raise ValueError(f"{region!r} is not an endings region (<bundle>_b or <bundle>_e)")
    return derivative_name(source, "mask", label=bids_label(bundle), desc=ENDING_DESC[end])


def dataset_description(version: str, *, peaks_engine: str | None = None,
                        source_datasets: Iterable[Mapping[str, str]] = ()) -> dict[str, object]:
    generated = {"Name": "tractseg-aot", "Version": version,
                 "Description": "TractSeg (MIC-DKFZ/TractSeg 2.10) white-matter bundle segmentation, run ahead of "
                                "time without PyTorch"}
    if peaks_engine is not None:
        generated["Description"] += f"; peaks computed by the {peaks_engine} engine"
    description: dict[str, object] = {"Name": "tractseg-aot derivatives", "BIDSVersion": BIDS_VERSION,
                                      "DatasetType": "derivative", "GeneratedBy": [generated]}
    sources = [dict(s) for s in source_datasets]
    if sources:
        description["SourceDatasets"] = sources
    return description


def write_dataset_description(out_dir: str | Path, description: Mapping[str, object]) -> Path:
    """Write ``<out_dir>/dataset_description.json`` atomically. An existing one from another generator is an
    OutputError (the folder belongs to another pipeline); ours is replaced."""
    path = Path(out_dir) / "dataset_description.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            names = [g.get("Name") for g in old.get("GeneratedBy", []) if isinstance(g, dict)]
        except (ValueError, AttributeError, UnicodeDecodeError):
            names = []
        if "tractseg-aot" not in names:
            raise OutputError(f"{path}: exists and was not written by tractseg-aot; choose another output folder")
    return write_text_atomic(path, json.dumps(description, indent=2) + "\n")
