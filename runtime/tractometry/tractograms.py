"""A subject's tractograms as Tractometry reads them: which bundles have one, and each file checked whole.

* :func:`read_streamlines`: the streamlines of one file as upstream's Tractometry reads them for the format
  (``trk_legacy``: the stored trackvis "voxmm" numbers, which for upstream's legacy header are the RAS mm points;
  ``trx``: :func:`runtime.tracking.trx_format.read_trx`). A file that is not whole is one line naming it: nibabel
  reads a ``.trk`` cut at a streamline boundary without complaint (fewer streamlines, header count rewritten),
  so the count stored in the header (``n_count``, when not 0, "unknown" in the trackvis spec) must match.
* :func:`find_tractograms`: the bundles' files for a format; when none of them is there, one line naming the
  format and what the folder holds instead (upstream writes a CSV of zeros then).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.affines import apply_affine
from nibabel.streamlines.trk import get_affine_trackvis_to_rasmm, header_2_dtype

from runtime.errors import InputError
from runtime.tracking.trx_format import read_trx
from runtime.tracking.writers import FORMATS, extension

TRK_HEADER_SIZE = 1000
TRACTOGRAM_ENDINGS = tuple(dict.fromkeys(f".{extension(f)}" for f in FORMATS))  # .tck, .trk, .trx


def _trk_stored_count(path: Path) -> int:
    """``n_count`` of a ``.trk`` header as the file stores it (0: not stored)."""
    with open(path, "rb") as stream:
        raw = stream.read(TRK_HEADER_SIZE)
    header = np.frombuffer(raw, header_2_dtype, 1)[0] if len(raw) == TRK_HEADER_SIZE else None
    if header is None:
        return 0
    if int(header["hdr_size"]) != TRK_HEADER_SIZE:
        header = np.frombuffer(raw, header_2_dtype.newbyteorder(), 1)[0]
    return int(header["nb_streamlines"])


def read_streamlines(path: Path, tracking_format: str) -> list[np.ndarray] | nib.streamlines.ArraySequence:
    """Streamlines as upstream's Tractometry reads them for ``tracking_format``; one line naming a file that is
    not a whole tractogram of that format."""
    if tracking_format == "trx":
        return read_trx(path)[0]
    what = f"not a readable {extension(tracking_format)} tractogram"
    try:
        loaded = nib.streamlines.load(str(path))
    except Exception as error:  # nibabel raises many types for a damaged file
        raise InputError(f"{path}: {what} ({type(error).__name__})") from None
    if isinstance(loaded, nib.streamlines.TrkFile):
        stored = _trk_stored_count(path)
        if stored and stored != len(loaded.streamlines):
            raise InputError(f"{path}: {what} (truncated: its header says {stored} streamlines, the file holds "
                             f"{len(loaded.streamlines)})")
    if tracking_format != "trk_legacy":
        return loaded.streamlines
    if not isinstance(loaded, nib.streamlines.TrkFile):
        raise InputError(f"{path}: not a .trk file")
    to_voxmm = np.linalg.inv(get_affine_trackvis_to_rasmm(loaded.header))
    return [apply_affine(to_voxmm, sl) for sl in loaded.streamlines]


def _found(tracking_dir: Path) -> str:
    """What a tracking folder holds, by tractogram ending: "3 .trk files (AF_left.trk, ...)"."""
    files = sorted(p.name for p in tracking_dir.iterdir() if p.suffix in TRACTOGRAM_ENDINGS and p.is_file())
    if not files:
        return "it holds no .tck, .trk or .trx file"
    parts = []
    for ending in TRACTOGRAM_ENDINGS:
        names = [f for f in files if f.endswith(ending)]
        if names:
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            parts.append(f"{len(names)} {ending} file{'s' * (len(names) != 1)} ({shown})")
    return "it holds " + "; ".join(parts)


def find_tractograms(tracking_dir: Path, bundles: Sequence[str], tracking_format: str) -> dict[str, Path | None]:
    """Each bundle's ``<bundle>.<ext>`` in ``tracking_dir`` (None: not there); one line when none is there."""
    paths = {b: tracking_dir / f"{b}.{extension(tracking_format)}" for b in bundles}
    found = {b: (p if p.is_file() else None) for b, p in paths.items()}
    if bundles and not any(found.values()):
        ending = extension(tracking_format)
        raise InputError(f"{tracking_dir}: no tractogram for --tracking_format {tracking_format} (no <bundle>.{ending}"
                         f" of the {len(bundles)} bundle(s) profiled); {_found(tracking_dir)}")
    return found
