"""Tractogram files as upstream writes them, through nibabel's current streamlines API, each written atomically.

Mirrors (TractSeg 2.10, ``libs/fiber_utils.py``):

* ``save_streamlines`` (``trk`` and ``tck``: header ``voxel_sizes`` = |diagonal|, ``voxel_order`` RAS,
  ``dimensions``, ``voxel_to_rasmm`` = the bundle mask's affine, points given in RAS mm) -> :func:`save_tractogram`
* ``save_streamlines_as_trk_legacy`` (nibabel < 5's ``trackvis`` API, which nibabel 5 removed)
                                                                        -> :func:`save_tractogram` with ``trk_legacy``
* ``create_empty_tractogram``                                           -> :func:`save_tractogram` with no streamlines

Not upstream's: ``trx`` (:mod:`runtime.tracking.trx_format`: float32 RAS mm points, the bundle mask's affine and
shape, the run's record in the TRX header as in the ``.json`` sidecar).

``trk_legacy``: upstream's legacy writer puts ``vox_to_ras = |affine|`` with a zero offset in the header
(``aff_to_hdr(pos_vox=False, set_order=False)``, ``voxel_order`` RAS, ``dim`` the grid) and stores each RAS mm point
``p`` as trackvis "voxmm" ``diag(zooms) @ inv(vox_to_ras) @ p``, which for that header is ``p`` itself (the old
API had no half-voxel shift). We store the same numbers with the current API by handing nibabel the points as
voxmm (``affine_to_rasmm`` = the header's trackvis-to-RAS affine), so the file holds what upstream's writer would
have written: ``trackvis.read`` (upstream's legacy reader, nibabel < 5) returns the RAS mm points, and
``nib.streamlines.load`` reads it as any legacy file (its points then lie half a voxel from the RAS mm ones, exactly
as upstream's own legacy files do under nibabel 5).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.streamlines.trk import get_affine_trackvis_to_rasmm

from runtime.io.atomic import atomic_target, write_text_atomic
from runtime.tracking.trx_format import write_trx

FORMATS = ("tck", "trk", "trk_legacy", "trx")


def extension(tracking_format: str) -> str:
    """File ending of a tracking format (upstream: ``trk_legacy`` files end in ``.trk``)."""
    return "trk" if tracking_format == "trk_legacy" else tracking_format


def _header(affine: np.ndarray, shape: Sequence[int], count: int) -> dict[str, object]:
    return {"voxel_sizes": np.abs(np.diag(affine)[:3]).astype(np.float32), "voxel_order": "RAS",
            "dimensions": np.asarray(shape[:3], dtype=np.int16), "voxel_to_rasmm": np.asarray(affine),
            "nb_streamlines": count}


def _legacy_header(affine: np.ndarray, shape: Sequence[int], count: int) -> dict[str, object]:
    vox_to_ras = np.abs(np.asarray(affine, dtype=np.float64))
    vox_to_ras[:3, 3] = 0
    return {"voxel_sizes": np.sqrt((vox_to_ras[:3, :3] ** 2).sum(axis=0)).astype(np.float32),
            "voxel_order": "RAS", "dimensions": np.asarray(shape[:3], dtype=np.int16),
            "voxel_to_rasmm": vox_to_ras, "nb_streamlines": count}


def save_tractogram(path: Path, streamlines: Sequence[np.ndarray], affine: np.ndarray, shape: Sequence[int],
                    tracking_format: str, metadata: dict[str, object] | None = None) -> Path:
    """Write ``streamlines`` (RAS mm) to ``path`` in upstream's layout for ``tracking_format``, atomically.
    ``metadata`` (the sidecar's record) goes into the file where the format has room for it (``trx``)."""
    if tracking_format == "trx":
        with atomic_target(path) as temporary:
            write_trx(temporary, streamlines, affine, shape, metadata)
        return path
    if tracking_format == "trk_legacy":
        header = _legacy_header(affine, shape, len(streamlines))
        trackvis_header = nib.streamlines.TrkFile.create_empty_header()
        trackvis_header.update({nib.streamlines.Field.VOXEL_SIZES: header["voxel_sizes"],
                                nib.streamlines.Field.VOXEL_TO_RASMM: header["voxel_to_rasmm"],
                                nib.streamlines.Field.VOXEL_ORDER: b"RAS"})
        tractogram = nib.streamlines.Tractogram(list(streamlines),
                                                affine_to_rasmm=get_affine_trackvis_to_rasmm(trackvis_header))
    else:
        header = _header(affine, shape, len(streamlines))
        tractogram = nib.streamlines.Tractogram(list(streamlines), affine_to_rasmm=np.eye(4))
    with atomic_target(path) as temporary:
        nib.streamlines.save(tractogram, str(temporary), header=header)
    return path


def write_sidecar(path: Path, record: dict[str, object]) -> Path:
    """The run's record beside the tractogram (``<bundle>.<ext>.json``): seed, counts, options, versions."""
    return write_text_atomic(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
