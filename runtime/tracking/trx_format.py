"""``--tracking_format trx``: one TRX file (https://github.com/tee-ar-ex/trx-spec) per bundle, through trx-python.

Not an upstream format (TractSeg 2.10 writes ``tck``, ``trk`` and ``trk_legacy``); added as the same streamlines in
the community format that DIPY, MI-Brain and others read. What a ``.trx`` here holds:

* ``positions.3.float32``: the RAS mm points, float32, the numbers a ``.tck`` of the same run holds (``.tck`` and
  ``.trk`` store float32 too, so nothing is rounded twice; float16 would halve the positions, but its 0.03-0.06 mm
  steps at brain coordinates would make a ``.trx`` profile differ from the ``.trk`` one);
* ``offsets.uint32`` (with the spec's final sentinel), written by trx-python;
* ``header.json``: ``VOXEL_TO_RASMM`` and ``DIMENSIONS`` of the bundle mask (what ``.trk`` headers hold), the two
  counts, and under ``TRACTSEG_AOT`` the run's record, the same as the ``<bundle>.trx.json`` sidecar (seed, counts,
  options; the spec's header is a JSON dictionary and trx-python keeps keys it does not know);
* an uncompressed zip (``ZIP_STORED``, the spec's default), so readers memory-map it.

trx-python is in the ``tracking`` extra; without it ``--tracking_format trx`` is one line naming the extra.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from runtime.errors import InputError, MissingExtraError

METADATA_KEY = "TRACTSEG_AOT"
TRX_MISSING = ("trx-python is not installed; --tracking_format trx needs it: pip install 'tractseg-aot[tracking]' "
               "(or pip install trx-python)")


def require_trx():
    """The trx-python module that reads and writes TRX files, or one line naming the extra."""
    try:
        from trx import trx_file_memmap
    except ImportError:
        raise MissingExtraError(TRX_MISSING) from None
    return trx_file_memmap


def write_trx(path: Path, streamlines: Sequence[np.ndarray], affine: np.ndarray, shape: Sequence[int],
              metadata: dict[str, object] | None = None) -> None:
    """``streamlines`` (RAS mm) as a TRX file at ``path`` (which must end in ``.trx``; not atomic by itself)."""
    trx_io = require_trx()
    tractogram = nib.streamlines.Tractogram(list(streamlines), affine_to_rasmm=np.eye(4))
    reference = {"VOXEL_TO_RASMM": np.asarray(affine, dtype=np.float64),
                 "DIMENSIONS": np.asarray(shape[:3], dtype=np.uint16), "NB_VERTICES": 0, "NB_STREAMLINES": 0}
    trx = trx_io.TrxFile.from_tractogram(tractogram, reference,
                                         dtype_dict={"positions": np.float32, "offsets": np.uint32})
    try:
        if metadata is not None:
            trx.header[METADATA_KEY] = metadata
        trx_io.save(trx, str(path))
    finally:
        trx.close()


def read_trx(path: Path) -> tuple[nib.streamlines.ArraySequence, dict[str, object]]:
    """The streamlines (RAS mm, float32, in memory) and the header of a TRX file; one line naming the file when it
    is not a readable TRX (a truncated zip, sizes that disagree with the header, a missing header)."""
    trx_io = require_trx()
    try:
        trx = trx_io.load(str(path))
    except Exception as error:  # zipfile, json and trx-python raise many types for a damaged file
        raise InputError(f"{path}: not a readable trx tractogram ({type(error).__name__}: "
                         f"{' '.join(str(error).split())[:80]})") from None
    try:
        header = {key: value for key, value in trx.header.items()}
        streamlines = trx.streamlines.copy()
        if len(streamlines) != int(header.get("NB_STREAMLINES", len(streamlines))):
            raise InputError(f"{path}: not a readable trx tractogram (header says {header['NB_STREAMLINES']} "
                             f"streamlines, the file holds {len(streamlines)})")
    finally:
        trx.close()
    if streamlines._data.dtype != np.float32:  # float16 / float64 positions from other writers
        streamlines._data = streamlines._data.astype(np.float32)
    return streamlines, header
