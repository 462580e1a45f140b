"""The JSON sidecars of the BIDS App's derivatives (:mod:`runtime.bids.derivatives`, :mod:`runtime.bids.tracts`).

Every sidecar names its ``Sources`` as BIDS URIs: ``bids:raw:<path>`` for the raw dataset's files (the DWI, a
scalar map under its ``derivatives/``), ``bids::<path>`` for files of this output dataset (the chain's working
files under ``tractseg_chain/``, which ``.bidsignore`` hides from a validator but which are there to read).

- Masks and probability maps: the bundle, the model (our own fields).
- Peaks (BEP016 parameter map; fields as the proposal's text defines them): ``Model`` (REQUIRED: ``Description``,
  ``Parameters`` with the CSD type and the peaks engine) and ``OrientationEncoding`` (REQUIRED for a 4D image):
  ``Type`` ``3vector`` (each triplet's norm is the peak's amplitude), ``EncodingAxis`` 3, ``Reference`` ``xyz``
  (MRtrix ``sh2peaks``' scanner / world axes, which both engines write), ``AntipodalSymmetry`` true. ``FillValue``
  (NaN for a missing peak) is left out: JSON cannot hold NaN; the description says it.
- Tractograms (BEP046): ``StreamlineSeeding``, ``StreamlinePropagation``, ``StreamlineTermination``,
  ``StreamlineAcceptanceCriteria`` (REQUIRED) and ``StreamlineReconstructionDensity``, filled with what upstream's
  tracker does (seeds drawn at random in the bundle mask, nearest-voxel TOM lookups, stop on leaving the mask, kept
  when one end lies in the beginnings and the other in the endings, stop at ``--nr_fibers`` accepted), plus
  ``TractsegAot``: the tracking's own record (seed, counts; the ``<bundle>.trx.json`` the chain wrote).
- Tractometry CSV: the scalar map, the tractograms' folder, the delimiter and the points.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runtime.bids.layout import BidsDwi
from runtime.options import RunOptions

TRACTSEG_URL = "https://github.com/MIC-DKFZ/TractSeg"


def raw_uri(path: Path, bids_dir: Path) -> str:
    """``bids:raw:<path in the raw dataset>``."""
    return f"bids:raw:{path.resolve().relative_to(bids_dir.resolve()).as_posix()}"


def own_uri(path: Path, output_dir: Path) -> str:
    """``bids::<path in this output dataset>``."""
    return f"bids::{path.relative_to(output_dir).as_posix()}"


def dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=1) + "\n"


def mask_sidecar(series: BidsDwi, bids_dir: Path, region: str, options: RunOptions) -> dict[str, Any]:
    """A mask's or probability map's sidecar: where it came from and what it is."""
    described = "TractSeg bundle segmentation (tractseg-aot)"
    if options.inference.uncertainty is not None:
        described = (f"TractSeg bundle uncertainty (tractseg-aot --uncertainty): the per-voxel standard deviation of "
                     f"{options.inference.uncertainty.samples} Monte Carlo dropout probability maps, dropout masks "
                     f"seeded with {options.inference.uncertainty.seed}")
    return {"Sources": [raw_uri(series.dwi, bids_dir)], "Bundle": region, "Model": options.model.name,
            "Description": described}


def peaks_sidecar(series: BidsDwi, bids_dir: Path, engine: str, csd_type: str) -> dict[str, Any]:
    """The peaks' BEP016 sidecar (module docstring)."""
    multi = csd_type != "csd"
    model = "Constrained spherical deconvolution" + (" (multi-shell multi-tissue; the peaks are the white-matter "
                                                     "fibre ODF's)" if multi else "")
    return {"Sources": [raw_uri(series.dwi, bids_dir)],
            "Description": "Fibre ODF peaks, upstream TractSeg's input (peaks.nii.gz): up to 3 per voxel, largest "
                           "first, each the peak's amplitude times its unit direction; NaN for a missing peak and "
                           "outside the brain mask",
            "Model": {"Description": model, "Parameters": {"CSDType": csd_type, "PeaksEngine": engine}},
            "OrientationEncoding": {"Type": "3vector", "EncodingAxis": 3, "Reference": "xyz",
                                    "AntipodalSymmetry": True}}


def tractogram_sidecar(series: BidsDwi, bids_dir: Path, output_dir: Path, chain_dir: Path, bundle: str,
                       record: dict[str, Any]) -> dict[str, Any]:
    """A tractogram's BEP046 sidecar (module docstring); ``chain_dir``: the series' chain folder, ``record``: the
    tracking's own sidecar."""
    def own(relative: str) -> str:
        return own_uri(chain_dir / relative, output_dir)

    mask = own(f"bundle_segmentations/{bundle}.nii.gz")
    ends = [own(f"endings_segmentations/{bundle}_{end}.nii.gz") for end in ("b", "e")]
    return {"Sources": [raw_uri(series.dwi, bids_dir), own(f"TOM/{bundle}.nii.gz"), mask, *ends],
            "Name": "TractSeg bundle-specific tracking (tractseg-aot)",
            "Description": "Upstream TractSeg's probabilistic tracking (fixed_prob) on the bundle's tract "
                           "orientation map, in RAS mm",
            "URL": TRACTSEG_URL,
            "StreamlineSeeding": {"Sources": [{"Type": "Random", "Source": mask}]},
            "StreamlinePropagation": {"Algorithm": {"Name": "TractSeg fixed_prob", "URL": TRACTSEG_URL},
                                      "Interpolation": "Nearest", "InterpolationOrder": 0,
                                      "Source": own(f"TOM/{bundle}.nii.gz")},
            "StreamlineTermination": {"Masks": [mask]},
            "StreamlineAcceptanceCriteria": {"InclusionRegions": ends},
            "StreamlineReconstructionDensity": {"AcceptedStreamlines": record.get("nr_fibers")},
            "TractsegAot": record}


def tractometry_sidecar(series: BidsDwi, bids_dir: Path, output_dir: Path, chain_dir: Path,
                        scalar: Path | None, nr_points: int) -> dict[str, Any]:
    """The tractometry CSV's sidecar."""
    sources = [raw_uri(series.dwi, bids_dir)] + ([raw_uri(scalar, bids_dir)] if scalar is not None else [])
    return {"Sources": sources + [own_uri(chain_dir / "TOM_trackings", output_dir)],
            "Description": f"Upstream TractSeg's Tractometry: the scalar map sampled at {nr_points} points along "
                           f"each bundle (first and last dropped), one column per bundle, one row per point",
            "Delimiter": ";", "URL": TRACTSEG_URL}
