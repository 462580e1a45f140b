"""b-vectors under the rigid motion (upstream's ``bin/rotate_bvecs``).

FSL b-vectors are in the image's voxel axes, with x negated when the image's affine has a positive determinant
(MRtrix's ``-fslgrad`` reads them so). Moving a DWI from the subject grid to the MNI grid turns a gradient by
``D_mni N(A_mni)^T R N(A_subj) D_subj`` (``N``: an affine's rotation, ``D``: that x negation, ``R``: the world
rotation of ``subject_to_mni``): what upstream gets from FLIRT's ``FA_2_MNI.mat``, which lives in FSL's
scaled-voxel frame."""
from __future__ import annotations

import numpy as np

from runtime.errors import InputError
from runtime.preprocess.grids import rotation_of


def _fsl_frame(affine: np.ndarray) -> np.ndarray:
    """World direction of each FSL b-vector axis: the affine's rotation, x negated when its determinant > 0."""
    axes = np.asarray(affine, dtype=np.float64)[:3, :3]
    flip = np.diag([-1.0, 1.0, 1.0]) if np.linalg.det(axes) > 0 else np.eye(3)
    u, _, vt = np.linalg.svd(axes @ flip)
    return u @ vt


def bvecs_rotation(subject_affine: np.ndarray, subject_to_mni: np.ndarray, mni_affine: np.ndarray) -> np.ndarray:
    """The 3x3 that takes the subject's FSL b-vectors to the MNI grid's FSL b-vectors."""
    return _fsl_frame(mni_affine).T @ rotation_of(subject_to_mni) @ _fsl_frame(subject_affine)


def rotate_bvecs(bvecs: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Upstream's ``rotate_bvecs``: each column of ``rotation``'s 3x3 normalised, then applied to every
    b-vector. ``bvecs`` (3, N) as FSL writes them, or (N, 3); returned in the same layout, float64."""
    bvecs = np.asarray(bvecs, dtype=np.float64)
    if bvecs.ndim != 2 or 3 not in bvecs.shape:
        raise InputError(f"b-vectors: (3, N) or (N, 3) expected, not shape {bvecs.shape}")
    by_rows = bvecs.shape[0] == 3  # FSL's layout; (3, 3) is read as FSL's too
    matrix = np.asarray(rotation, dtype=np.float64)[:3, :3]
    matrix = matrix / np.linalg.norm(matrix, axis=0)
    moved = matrix @ (bvecs if by_rows else bvecs.T)
    return moved if by_rows else moved.T
