"""A subject's peaks in memory, read once with every input check (:mod:`runtime.checks.input_checks`): from a
path, a nibabel image or ``(array, affine)``. The pipeline (:meth:`runtime.pipeline.TractSegPipeline.predict`) and
the subject runner (:mod:`runtime.runner`) both read through :func:`read_peaks`."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from runtime.checks.input_checks import check_cube_aspect, check_layout, check_values, warn_if_oblique
from runtime.errors import InputError
from runtime.io.geometry import BBox, crop_to_nonzero, flip, mni_flip_axes
from runtime.io.nifti_io import check_input_file, load_peaks, strip_nifti

PeaksInput = str | os.PathLike[str] | nib.Nifti1Pair | tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class ReadPeaks:
    """A checked peak image in memory: float32 (X, Y, Z, 9), NaN set to 0, its affine and where it came from.
    ``bbox``: the non-zero box in MNI-flipped axes, once :func:`check_aspect` has computed it (the pipeline then
    crops with it instead of searching the volume again)."""

    data: np.ndarray
    affine: np.ndarray
    source: str
    bbox: BBox | None = None


def subject_name(source: str | os.PathLike[str]) -> str:
    """A name for a subject from its input: the file name without .nii.gz (pictures, statistics)."""
    return strip_nifti(Path(source).name)


def check_input_path(peaks: PeaksInput | ReadPeaks) -> None:
    """A path input is a readable, non-empty file (before anything else, so a misspelled path is named as such
    rather than reported as a missing bundle). Other inputs pass."""
    if isinstance(peaks, (str, os.PathLike)):
        if not str(peaks):
            raise InputError("peaks: empty path")
        check_input_file(Path(peaks))


def read_peaks(peaks: PeaksInput | ReadPeaks, size: int = 144, classes: int = 72) -> ReadPeaks:
    """The input in memory with every input check made, for a run with cube edge ``size`` and ``classes``
    outputs (they enter the memory estimate). A :class:`ReadPeaks` is returned as it is."""
    if isinstance(peaks, ReadPeaks):
        return peaks
    if isinstance(peaks, (str, os.PathLike)):
        check_input_path(peaks)
        data, affine = load_peaks(peaks, size, classes)
        return ReadPeaks(data, affine, str(peaks))
    if isinstance(peaks, (nib.Nifti1Pair, nib.Nifti2Pair)):
        name = peaks.get_filename() or "<nibabel image>"
        warn_if_oblique(name, check_layout(name, tuple(peaks.shape), np.dtype(peaks.get_data_dtype()), peaks.affine))
        data = np.array(peaks.get_fdata(dtype=np.float32, caching="unchanged"))  # a copy: NaN -> 0 below
        affine = np.asarray(peaks.affine, np.float64)
    elif isinstance(peaks, tuple) and len(peaks) == 2:
        name = "<array>"
        data = np.asarray(peaks[0])
        try:
            affine = np.asarray(peaks[1], dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"{name}: the affine must be a 4x4 array of numbers, not {type(peaks[1]).__name__} "
                             f"{str(peaks[1])[:40]!r}") from None
        if affine.shape != (4, 4):
            raise InputError(f"{name}: the affine must be 4x4, not {affine.shape}")
        warn_if_oblique(name, check_layout(name, tuple(data.shape), data.dtype, affine))
        data = data.astype(np.float32)  # a copy: the caller's array is never changed
    else:
        raise TypeError(f"peaks must be a path, a nibabel image or (array, affine), not {type(peaks).__name__}")
    np.nan_to_num(data, copy=False, nan=0.0, posinf=np.inf, neginf=-np.inf)
    check_values(name, data)
    return ReadPeaks(data, affine, name)


def check_aspect(peaks: ReadPeaks) -> ReadPeaks:
    """The brain's box (non-zero voxels, in MNI-flipped axes) fits the network's cube without an extreme
    zoom (:func:`runtime.checks.input_checks.check_cube_aspect`); returns ``peaks`` with the box recorded."""
    if peaks.bbox is not None:
        return peaks
    bbox = crop_box(peaks.data, mni_flip_axes(peaks.affine))
    check_cube_aspect(peaks.source, tuple(b - a for a, b in bbox))
    return ReadPeaks(peaks.data, peaks.affine, peaks.source, bbox)


def crop_box(data: np.ndarray, axes: tuple[int, ...]) -> BBox:
    """The non-zero box of ``data`` flipped along ``axes`` (upstream's crop)."""
    return crop_to_nonzero(flip(data, axes))[1]
