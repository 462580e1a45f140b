"""Bringing every output of the run in MNI space back to the input's grid and affine (upstream's
``move_to_subject_space``), under the inverse of ``subject_to_mni``.

Kinds: "mask" by nearest neighbour, dtype kept (upstream: ``flirt -interp nearestneighbour`` then ``fslmaths -thr
0.5 -bin``, a no-op on a nearest-neighbour copy of a binary mask); "linear" (probabilities, density maps) by
trilinear interpolation, float32 (upstream uses ``-interp spline`` for float outputs: a cubic B-spline overshoots
[0, 1] at edges; "spline" gives it when wanted); "vectors" (TOM, (X, Y, Z, 3k)) by sign-aware trilinear
interpolation with every vector rotated back by the inverse rotation (upstream: FSL ``vecreg`` with
``MNI_2_FA.mat``, trilinear by default)."""
from __future__ import annotations

import numpy as np

from runtime.preprocess.grids import check_affine, resample_scalar, rotation_of, voxel_map
from runtime.preprocess.vectors import resample_vectors

KINDS = ("mask", "linear", "vectors", "spline")


def to_subject(volume_in_mni: np.ndarray, kind: str, subject_affine: np.ndarray, subject_shape: tuple[int, ...],
               subject_to_mni: np.ndarray, template_affine: np.ndarray) -> np.ndarray:
    """``volume_in_mni`` (3D or channels-last 4D, on ``template_affine``: the MNI grid the run used) resampled
    onto the subject grid (``subject_affine``, ``subject_shape[:3]``); 0 where it falls outside the MNI grid."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    transform = check_affine(subject_to_mni, "subject_to_mni")
    matrix = voxel_map(check_affine(subject_affine, "the subject image"),
                       check_affine(template_affine, "the MNI grid"), transform)
    shape = tuple(int(n) for n in subject_shape[:3])
    if kind == "vectors":
        return resample_vectors(np.asarray(volume_in_mni, dtype=np.float32), matrix, shape,
                                rotation_of(transform).T)
    return resample_scalar(np.asarray(volume_in_mni), matrix, shape, "nearest" if kind == "mask" else kind)
