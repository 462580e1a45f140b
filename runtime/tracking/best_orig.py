"""``--track_best_orig``: the probabilistic tracker on the input peak closest in angle to the TOM peak.

Mirrors (TractSeg 2.10):

* ``fiber_utils.get_best_original_peaks`` (NaN read as 0; all input peaks of a voxel zeroed where the TOM peak is
  shorter than 0.1; per voxel the first of the three input peaks with the largest ``|cos|`` to the TOM peak,
  ``cos = <a, b> / (|a| |b| + 1e-7)`` as ``peak_utils.angle_last_dim``)  -> :func:`best_original_peaks`, all
  voxels at once instead of three stacked angle images and an ``ogrid`` index
* ``tracking.track`` with ``use_best_original_peaks`` (input peaks flipped to MNI orientation as the TOM is, the
  best peaks saved flipped back as ``<tracking folder>/<bundle>.nii.gz`` with the input's affine, float64 as
  ``get_fdata`` gives them, then tracked in place of the TOM)                       -> :func:`substitute_best_peaks`
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np

from runtime.errors import InputError
from runtime.io.atomic import atomic_target
from runtime.io.geometry import flip, mni_flip_axes
from runtime.tracking.prepare import BundleInputs, check_grid, load_image

TOM_LENGTH_THRESHOLD = 0.1
PEAKS_USED = 3  # upstream reads channels 0:3, 3:6 and 6:9


def best_original_peaks(tom: np.ndarray, peaks: np.ndarray,
                        threshold: float = TOM_LENGTH_THRESHOLD) -> np.ndarray:
    """(X, Y, Z, 3) TOM and (X, Y, Z, >= 9) input peaks -> (X, Y, Z, 3): per voxel the input peak most aligned
    with the TOM peak (sign ignored; the first of equals)."""
    tom = np.nan_to_num(tom)
    candidates = np.nan_to_num(peaks[..., :3 * PEAKS_USED]).reshape(peaks.shape[:3] + (PEAKS_USED, 3))
    candidates[np.linalg.norm(tom, axis=-1) < threshold] = 0
    tom_length = np.linalg.norm(tom, axis=-1)
    alignment = np.stack([np.abs(np.einsum("...i,...i", tom, candidates[..., k, :])
                                 / (tom_length * np.linalg.norm(candidates[..., k, :], axis=-1) + 1e-7))
                          for k in range(PEAKS_USED)], axis=-1)
    best = np.argmax(alignment, axis=-1)
    return np.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]


def check_original_peaks(path: Path, reference: nib.Nifti1Image, reference_path: Path) -> None:
    """Before tracking: the ``-i`` peaks readable, 4D with at least 9 channels, on the bundle mask's grid."""
    image = load_image(path)
    if len(image.shape) != 4 or image.shape[3] < 3 * PEAKS_USED:
        raise InputError(f"{path}: --track_best_orig needs a 4D peak image with at least {3 * PEAKS_USED} channels, "
                         f"got shape {image.shape}")
    check_grid(image, path, reference.shape[:3], reference.affine, reference_path)


def substitute_best_peaks(inputs: BundleInputs, peaks_path: Path, save_to: Path) -> BundleInputs:
    """``inputs`` with its TOM replaced by the best original peaks (both MNI-flipped); the best peaks are saved
    unflipped to ``save_to`` (atomically) as upstream saves them."""
    image = load_image(peaks_path)
    axes = mni_flip_axes(image.affine)
    try:
        peaks = image.get_fdata()
    except Exception as error:  # nibabel raises many types for damaged data
        raise InputError(f"{peaks_path}: cannot read the image data ({type(error).__name__})") from None
    best = best_original_peaks(inputs.tom, flip(peaks, axes))
    with atomic_target(save_to) as temporary:
        nib.save(nib.Nifti1Image(flip(best, axes), image.affine), str(temporary))
    return replace(inputs, tom=best)
