"""Moving the subject's input into MNI space (upstream's ``move_to_MNI_space``): onto the template's field of view
at the subject's spacing (:func:`mni_grid`, FLIRT's ``-applyisoxfm <dwi spacing>``), under ``subject_to_mni``.

Interpolation: upstream resamples the raw DWI with ``-interp spline`` and the brain mask with ``-interp
nearestneighbour``, and has no path for peaks input (its ``--preprocess`` works on the DWI only; peaks are then
computed in MNI space). Here: a DWI by cubic B-spline ("spline", negative overshoots set to 0), masks by nearest
neighbour, peaks by sign-aware trilinear interpolation (:mod:`runtime.preprocess.vectors`: the closest to
upstream's smooth resampling that a field of sign-less directions allows; "nearest" on request), each peak
rotated by the registration's rotation."""
from __future__ import annotations

import numpy as np

from runtime.errors import InputError
from runtime.preprocess.bvecs import bvecs_rotation, rotate_bvecs
from runtime.preprocess.grids import (Shape3, check_affine, grid_at_spacing, resample_scalar, rotation_of,
                                      voxel_map, voxel_sizes)
from runtime.preprocess.vectors import resample_vectors


def mni_grid(template_affine: np.ndarray, template_shape: tuple[int, ...],
             subject_affine: np.ndarray) -> tuple[np.ndarray, Shape3]:
    """The grid the run uses in MNI space: the template's field of view at the subject's (smallest) voxel size,
    as upstream's ``flirt -applyisoxfm``. Returns (affine, shape)."""
    return grid_at_spacing(check_affine(template_affine, "the MNI template"), template_shape,
                           float(voxel_sizes(check_affine(subject_affine, "the subject image")).min()))


def _mni_map(subject_affine: np.ndarray, subject_to_mni: np.ndarray, mni_affine: np.ndarray) -> np.ndarray:
    transform = check_affine(subject_to_mni, "subject_to_mni")
    return voxel_map(check_affine(mni_affine, "the MNI grid"), check_affine(subject_affine, "the subject image"),
                     np.linalg.inv(transform))


def peaks_to_mni(data: np.ndarray, affine: np.ndarray, subject_to_mni: np.ndarray, template_affine: np.ndarray,
                 template_shape: tuple[int, ...], *, interpolation: str = "linear") -> np.ndarray:
    """Peaks (X, Y, Z, 3k) on ``affine`` resampled onto the grid (``template_affine``, ``template_shape``; use
    :func:`mni_grid` for upstream's grid) and rotated by ``subject_to_mni``'s rotation. float32, 0 outside.
    ``interpolation``: "linear" (sign-aware, peaks matched) or "nearest"."""
    data = np.asarray(data, dtype=np.float32)  # (NaN and inf read as 0, without a copy of the peaks)
    if data.ndim != 4 or data.shape[3] % 3:
        raise InputError(f"the peaks: (X, Y, Z, 9) expected, not shape {data.shape}")
    matrix = _mni_map(affine, subject_to_mni, template_affine)
    return resample_vectors(data, matrix, tuple(template_shape[:3]), rotation_of(subject_to_mni), interpolation)


def to_mni(volume: np.ndarray, kind: str, subject_affine: np.ndarray, subject_to_mni: np.ndarray,
           mni_affine: np.ndarray, mni_shape: tuple[int, ...]) -> np.ndarray:
    """A subject-space volume (3D or channels-last 4D) onto the MNI grid. ``kind``: "mask" (nearest neighbour,
    dtype kept: upstream's brain mask), "linear", "spline" (float32), "vectors" (sign-aware linear, rotated)."""
    matrix = _mni_map(subject_affine, subject_to_mni, mni_affine)
    shape = tuple(mni_shape[:3])
    if kind == "vectors":
        return resample_vectors(np.asarray(volume, dtype=np.float32), matrix, shape, rotation_of(subject_to_mni))
    return resample_scalar(np.asarray(volume), matrix, shape, {"mask": "nearest"}.get(kind, kind))


def dwi_to_mni(dwi: np.ndarray, subject_affine: np.ndarray, bvecs: np.ndarray, subject_to_mni: np.ndarray,
               mni_affine: np.ndarray, mni_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A 4D DWI onto the MNI grid by cubic B-spline, volume by volume (negative overshoots set to 0), and its FSL
    b-vectors rotated into the MNI grid's voxel frame (upstream's ``flirt -interp spline`` + ``rotate_bvecs``).
    Returns (float32 DWI, b-vectors in the layout given). b-values do not change."""
    dwi = np.asarray(dwi)
    if dwi.ndim != 4:
        raise InputError(f"the DWI: 4D expected, not shape {dwi.shape}")
    matrix = _mni_map(subject_affine, subject_to_mni, mni_affine)
    shape = tuple(mni_shape[:3])
    out = np.empty((*shape, dwi.shape[3]), dtype=np.float32)
    for volume in range(dwi.shape[3]):
        moved = resample_scalar(np.asarray(dwi[..., volume], dtype=np.float32), matrix, shape, "spline")
        out[..., volume] = np.maximum(moved, 0.0)
    rotation = bvecs_rotation(subject_affine, subject_to_mni, mni_affine)
    return out, rotate_bvecs(bvecs, rotation)
