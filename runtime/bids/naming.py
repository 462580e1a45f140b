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
- Peaks (BEP016, diffusion derivatives, as written in the proposal's repository bids-standard/bids-bep016, branch
  ``bep-016`` at its 2025-09-15 merge; bids-specification PR #2258 carries it; QSIRecon names peaks the same way):
  ``<source_entities>[_space-<space>]_model-<label>_param-<label>_dwimap.nii.gz`` -> upstream's ``peaks.nii.gz`` is
  ``sub-01_space-orig_model-csd_param-peaks_dwimap.nii.gz`` (either engine, any ``--csd_type``: multi-tissue CSD
  is model ``csd`` too; no ``desc``, which BEP016 reserves for two versions of one model: we keep one).
- Tractograms (BEP046, tractography, bids-specification PR #2333; its draft's template
  ``<source>[_space-][_tract-][_track-]_tractogram.trx`` and example ``..._tract-ArcuateFasciculus_hemi-L_track-eudx``):
  ``<source_entities>[_space-<space>][_tract-<tract>][_hemi-L|R][_track-<method>]_tractogram.trx``: a bundle name
  ``CST_left`` is ``tract-CST_hemi-L``, ``CC_1`` is ``tract-CC1``, the method ``track-tractseg``.
- A series' tractometry CSV (upstream's ``Tractometry.csv``; no proposal names one, so BIDS-like):
  ``<source_entities>_space-orig_model-<m>_param-<p>_track-tractseg_tractometry.csv``: the scalar map's
  ``model``/``param``, the tracking method.
- ``dataset_description.json``: ``DatasetType`` "derivative" and ``GeneratedBy`` (REQUIRED for derivatives) naming
  tractseg-aot, its version, (optional field) the peaks engine, and every kind of derivative written.
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
HEMISPHERES = {"left": "L", "right": "R"}
PEAKS_MODEL, PEAKS_PARAM = "csd", "peaks"
TRACK = "tractseg"  # BEP046's tracking method: upstream TractSeg's own tracker on its TOMs
DERIVATIVE_KINDS = {  # what dataset_description.json lists, by kind
    "mask": "bundle masks (*_space-orig_label-<bundle>_mask.nii.gz)",
    "probseg": "bundle probabilities (*_space-orig_label-<bundle>_probseg.nii.gz)",
    "uncertainty": "bundle uncertainty maps, --uncertainty (*_space-orig_label-<bundle>_desc-uncertainty_probseg.nii.gz)",
    "endings": "bundle beginnings and endings (*_space-orig_label-<bundle>_desc-beginnings|endings_mask.nii.gz)",
    "peaks": "fibre peaks, BEP016 (*_space-orig_model-csd_param-peaks_dwimap.nii.gz)",
    "tractogram": "tractograms, BEP046 (*_space-orig_tract-<tract>[_hemi-L|R]_track-tractseg_tractogram.trx)",
    "tractometry": "tractometry profiles, upstream's CSV (*_space-orig_model-<model>_param-<param>_track-tractseg"
                   "_tractometry.csv)",
}


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


def entity_name(source: str, entities: Iterable[tuple[str, str | None]], suffix: str, extension: str) -> str:
    """``<source>[_<key>-<value>]..._<suffix><extension>``, the entities in the order given (None: left out)."""
    parts = [source]
    for key, value in entities:
        if value is not None:
            if not re.fullmatch(r"[A-Za-z0-9]+", value):
                raise ValueError(f"{value!r} is not a BIDS label (letters and digits only)")
            parts.append(f"{key}-{value}")
    if not re.fullmatch(r"[A-Za-z0-9]+", suffix):
        raise ValueError(f"{suffix!r} is not a BIDS suffix (letters and digits only)")
    return "_".join(parts) + f"_{suffix}{extension}"


def derivative_name(source: str, suffix: str, *, label: str | None = None, desc: str | None = None,
                    space: str = SPACE, extension: str = ".nii.gz") -> str:
    """``<source>_space-<space>[_label-<label>][_desc-<desc>]_<suffix><extension>`` (entity order of the spec's
    mask template; ``source`` is e.g. ``sub-01_ses-1_run-1``)."""
    return entity_name(source, (("space", space), ("label", label), ("desc", desc)), suffix, extension)


def mask_name(source: str, bundle: str) -> str:
    """A tract mask: ``sub-01_space-orig_label-CSTleft_mask.nii.gz``."""
    return derivative_name(source, "mask", label=bids_label(bundle))


def probseg_name(source: str, bundle: str) -> str:
    """A tract probability map: ``sub-01_space-orig_label-CSTleft_probseg.nii.gz``."""
    return derivative_name(source, "probseg", label=bids_label(bundle))


def uncertainty_name(source: str, bundle: str) -> str:
    """A tract's uncertainty map (``--uncertainty``: the std of the Monte Carlo dropout probabilities), a variant
    of its probability map: ``sub-01_space-orig_label-CSTleft_desc-uncertainty_probseg.nii.gz``."""
    return derivative_name(source, "probseg", label=bids_label(bundle), desc="uncertainty")


def ending_name(source: str, region: str) -> str:
    """An endings region ``CST_left_b`` -> ``sub-01_space-orig_label-CSTleft_desc-beginnings_mask.nii.gz``."""
    bundle, _, end = region.rpartition("_")
    if end not in ENDING_DESC or not bundle:
        raise ValueError(f"{region!r} is not an endings region (<bundle>_b or <bundle>_e)")
    return derivative_name(source, "mask", label=bids_label(bundle), desc=ENDING_DESC[end])


def tract_entities(bundle: str) -> tuple[str, str | None]:
    """A bundle name as BEP046's ``tract`` and ``hemi``: ``CST_left`` -> (``CST``, ``L``), ``CC_1`` -> (``CC1``,
    None), ``SLF_I_right`` -> (``SLFI``, ``R``)."""
    stem, _, side = bundle.rpartition("_")
    if stem and side in HEMISPHERES:
        return bids_label(stem), HEMISPHERES[side]
    return bids_label(bundle), None


def dwimap_name(source: str, model: str, param: str, space: str = SPACE) -> str:
    """A BEP016 parameter map: ``<source>_space-<space>_model-<model>_param-<param>_dwimap.nii.gz``."""
    return entity_name(source, (("space", space), ("model", model), ("param", param)), "dwimap", ".nii.gz")


def peaks_name(source: str) -> str:
    """upstream's ``peaks.nii.gz``: ``sub-01_space-orig_model-csd_param-peaks_dwimap.nii.gz``."""
    return dwimap_name(source, PEAKS_MODEL, PEAKS_PARAM)


def tractogram_name(source: str, bundle: str) -> str:
    """A bundle's tractogram (BEP046): ``sub-01_space-orig_tract-CST_hemi-L_track-tractseg_tractogram.trx``."""
    tract, hemi = tract_entities(bundle)
    return entity_name(source, (("space", SPACE), ("tract", tract), ("hemi", hemi), ("track", TRACK)),
                       "tractogram", ".trx")


def tractometry_name(source: str, model: str, param: str) -> str:
    """A series' tractometry CSV: ``sub-01_space-orig_model-tensor_param-fa_track-tractseg_tractometry.csv``."""
    return entity_name(source, (("space", SPACE), ("model", model), ("param", param), ("track", TRACK)),
                       "tractometry", ".csv")


def dataset_description(version: str, *, peaks_engine: str | None = None,
                        source_datasets: Iterable[Mapping[str, str]] = (),
                        kinds: Iterable[str] = ()) -> dict[str, object]:
    """The output folder's description; ``kinds``: keys of :data:`DERIVATIVE_KINDS`, what this run writes."""
    generated = {"Name": "tractseg-aot", "Version": version,
                 "Description": "TractSeg (MIC-DKFZ/TractSeg 2.10) white-matter bundle segmentation, run ahead of "
                                "time without PyTorch"}
    if peaks_engine is not None:
        generated["Description"] += f"; peaks computed by the {peaks_engine} engine"
    listed = [DERIVATIVE_KINDS[kind] for kind in kinds]
    if listed:
        generated["Description"] += "; derivatives, each with a JSON sidecar: " + ", ".join(listed)
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
