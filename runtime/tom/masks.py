"""The bundle masks a TOM run needs: found, checked (before anything runs) and prepared as upstream does.

Mirrors (TractSeg 2.10) ``peak_utils.mask_and_normalize_peaks``, per bundle:

| upstream                                                        | here                          |
|-----------------------------------------------------------------|-------------------------------|
| ``nib.load(join(tract_seg_path, bundle + ".nii.gz"))``          | :func:`mask_path`             |
| ``flip_axis_to_match_MNI_space(img.get_fdata(), img.affine)``   | :func:`prepared_mask`         |
| ``binary_dilation(mask, iterations=dilation)`` (dilation 1)      | :func:`prepared_mask`         |
| ``bundle_peaks[mask == 0] = 0``; ``normalize_peak_to_unit_length`` | :func:`mask_and_normalise` |

The masks default to ``<output>/bundle_segmentations`` (``bin/TractSeg``); ``--tract_segmentations_path`` names
another folder. A missing or unreadable (e.g. zero-byte) file, or one not on the input's grid, is a one-line
:class:`InputError` naming the file, raised by :func:`check_masks` before a backend is opened. An all-zero mask
is accepted, as upstream accepts it: that bundle's TOM is all zero.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from runtime.errors import InputError
from runtime.io.geometry import flip, mni_flip_axes

TOM_DILATION = 1  # bin/TractSeg: TOM_dilation = 1
GRID_TOLERANCE = 1e-3  # mask and peaks affines may differ by this much (header float rounding)
NORM_EPS = 1e-20  # peak_utils.normalize_peak_to_unit_length


def default_masks_dir(outdir: str | os.PathLike[str]) -> Path:
    return Path(outdir) / "bundle_segmentations"


def mask_path(folder: str | os.PathLike[str], bundle: str) -> Path:
    return Path(folder) / f"{bundle}.nii.gz"


def _open(path: Path) -> nib.Nifti1Image:
    if not path.is_file():
        raise InputError(f"{path}: bundle mask missing (run --output_type tract_segmentation first, or pass "
                         "--tract_segmentations_path DIR)")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: bundle mask is an empty file")
    try:
        return nib.load(path)
    except Exception as error:  # nibabel's ImageFileError, gzip/zlib errors, OSError
        raise InputError(f"{path}: bundle mask is not a readable NIfTI ({' '.join(str(error).split())[:120]})") \
            from None


def check_masks(folder: str | os.PathLike[str], bundles: Sequence[str], shape: tuple[int, ...],
                affine: np.ndarray) -> Path:
    """Every bundle's mask present, readable and on the input's grid (3D ``shape``, ``affine``); returns the
    folder. Headers only: the data is read (and a truncated file refused) when the bundle is written."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: no bundle segmentations folder (run --output_type tract_segmentation first, "
                         "or pass --tract_segmentations_path DIR)")
    for bundle in bundles:
        path = mask_path(root, bundle)
        image = _open(path)
        if tuple(image.shape) != tuple(shape[:3]):
            raise InputError(f"{path}: bundle mask has shape {tuple(image.shape)}, the peaks' grid is "
                             f"{tuple(shape[:3])}")
        if not np.allclose(image.affine, affine, atol=GRID_TOLERANCE):
            raise InputError(f"{path}: bundle mask's affine differs from the peaks' (another grid)")
    return root


def prepared_mask(folder: str | os.PathLike[str], bundle: str) -> np.ndarray:
    """The bundle's mask flipped to MNI signs by its own affine and dilated by TOM_DILATION voxels (bool)."""
    path = mask_path(folder, bundle)
    image = _open(path)
    try:
        data = np.asarray(image.dataobj)
    except Exception as error:  # truncated gzip (EOFError, zlib.error), short file (ValueError, OSError)
        raise InputError(f"{path}: cannot read the bundle mask, file truncated or corrupt "
                         f"({' '.join(str(error).split())[:120]})") from None
    mask = flip(data != 0, mni_flip_axes(image.affine))
    return ndimage.binary_dilation(mask, iterations=TOM_DILATION)


def mask_and_normalise(peaks: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Upstream's per-bundle step on (X, Y, Z, 3) float32 peaks in MNI orientation: zero outside the mask,
    then ``peaks / (|peaks| + 1e-20)`` in float32."""
    peaks[~mask] = 0
    return peaks / (np.linalg.norm(peaks, axis=-1) + np.float32(NORM_EPS))[..., None]
