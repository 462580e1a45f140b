"""Sign flips of peak directions and of FSL b-vector tables, and what each one means in world (scanner) axes.

Conventions (the ones MRtrix uses, which upstream TractSeg's inputs follow):

* Peaks (``sh2peaks``): channel ``3k..3k+2`` is peak k as a vector in WORLD axes (scanner RAS+), whatever the
  grid's storage order. A world-axis flip of the peaks therefore negates that component of every peak and
  nothing else: the grid, the affine and the voxel order stay as they are (:func:`apply_flip`).
* FSL bvecs: one vector per volume in the image's VOXEL axes, with x negated when the affine's determinant is
  positive (FSL's "radiological" frame). MRtrix's ``-fslgrad`` turns them into world gradients as
  ``g = R S b`` with ``S = diag(-1, 1, 1)`` if det(affine[:3, :3]) > 0 else the identity and ``R`` the rotation of
  the affine's linear part (polar decomposition), as :func:`runtime.diffusion.dipy_engine.world_gradients` does.

What a flip means for a bvecs file, given the affine:

* Negating row ``v`` of the file (``b' = F_v b``) turns the world gradients into ``g' = R F_v R^T g`` (``S`` and
  ``F_v`` are diagonal, so they commute and ``S`` cancels). For an axis-aligned, non-permuted affine ``R`` is a
  diagonal of +-1, so this is exactly the world flip of the same axis, whether the image is stored LAS or RAS:
  row 1 of the file <-> world x, row 2 <-> world y, row 3 <-> world z. For a permuted affine (e.g. a sagittal
  acquisition stored with its voxel axes in another order) row ``v`` maps to a different world axis, and for an
  oblique one to a reflection that is not a world-axis flip at all.
* Conversely the world flip ``F_a`` of the gradients is ``b' = S R^T F_a R S b`` in the file
  (:func:`flip_bvecs` with an affine); for an oblique affine it mixes the rows.

Mistakes in a bvecs file are made row by row (a tool or person negates one of the three rows), so the b-vector
check (:mod:`runtime.orientation.dwi`) tests the row flips ``R F_v R^T`` and names the row to negate.
"""
from __future__ import annotations

import numpy as np

AXES = ("x", "y", "z")


def axis_index(axis: str | int) -> int:
    """"x"/"y"/"z" (any case) or 0/1/2 -> 0/1/2; anything else is a ValueError."""
    if isinstance(axis, (int, np.integer)) and not isinstance(axis, bool) and 0 <= int(axis) <= 2:
        return int(axis)
    if isinstance(axis, str) and axis.lower() in AXES:
        return AXES.index(axis.lower())
    raise ValueError(f"axis must be 'x', 'y', 'z' or 0, 1, 2, not {axis!r}")


def flip_matrix(axis: str | int | None) -> np.ndarray:
    """``diag(+-1, +-1, +-1)`` negating one axis; None or "none" gives the identity."""
    matrix = np.eye(3)
    if axis is not None and axis != "none":
        matrix[axis_index(axis), axis_index(axis)] = -1.0
    return matrix


WORLD_FLIPS: dict[str, np.ndarray] = {name: flip_matrix(name) for name in ("none", *AXES)}


def rotation(affine: np.ndarray) -> np.ndarray:
    """The rotation (or rotation-reflection) of the affine's 3x3 part: ``U V^T`` of its SVD, Eigen's
    ``rotation()`` as MRtrix uses it; the voxel sizes and shears are dropped."""
    u, _, vt = np.linalg.svd(np.asarray(affine, dtype=float)[:3, :3])
    return u @ vt


def fsl_sign(affine: np.ndarray) -> np.ndarray:
    """``S``: FSL's bvecs have x negated relative to the voxel axes when det(affine[:3, :3]) > 0."""
    return flip_matrix("x") if np.linalg.det(np.asarray(affine, dtype=float)[:3, :3]) > 0 else np.eye(3)


def bvec_row_flips(affine: np.ndarray) -> dict[str, np.ndarray]:
    """World reflections ``R F_v R^T`` caused by negating row v of an FSL bvecs file, keyed "none", "x", "y", "z"
    (the rows 1, 2, 3)."""
    r = rotation(affine)
    return {name: r @ matrix @ r.T for name, matrix in WORLD_FLIPS.items()}


def apply_flip(data: np.ndarray, affine: np.ndarray, axis: str | int | None, frame: str = "world") -> np.ndarray:
    """Peaks ``(X, Y, Z, 3K)`` with the world axis ``axis`` flipped (a new array, same dtype); None/"none" copies.

    ``frame="world"`` (MRtrix ``sh2peaks``, TractSeg's input): the vectors are in world axes, so the flip negates
    component ``axis`` of every peak; the affine is not needed for that and the grid is untouched.
    ``frame="voxel"`` (vectors in the voxel axes of ``affine``, e.g. upstream's tracking after
    ``apply_rotation_to_peaks``): ``v' = R^-1 F R v`` with R the affine's columns normalised to unit length, so
    the same world flip is applied to vectors stored in voxel axes.
    """
    if data.ndim != 4 or data.shape[3] % 3:
        raise ValueError(f"expected peaks of shape (X, Y, Z, 3K), got {data.shape}")
    out = np.array(data, copy=True)
    if axis is None or axis == "none":
        return out
    if frame == "world":
        out[..., axis_index(axis)::3] *= -1
        return out
    if frame != "voxel":
        raise ValueError(f"frame must be 'world' or 'voxel', not {frame!r}")
    linear = np.asarray(affine, dtype=float)[:3, :3]
    columns = linear / np.linalg.norm(linear, axis=0)
    transform = np.linalg.inv(columns) @ flip_matrix(axis) @ columns
    vectors = out.reshape(*out.shape[:3], -1, 3)
    vectors[...] = (vectors.astype(np.float64) @ transform.T).astype(out.dtype)
    return out


def flip_bvecs(bvecs: np.ndarray, axis: str | int | None, affine: np.ndarray | None = None) -> np.ndarray:
    """An FSL b-vector table with one axis flipped, in the table's own layout ((3, N) rows or (N, 3) columns;
    a 3x3 table is read as FSL's 3 rows).

    Without ``affine``: ``axis`` names a row of the file (x = row 1) and that row is negated: the usual fix, and
    the flip that :func:`runtime.orientation.dwi.check_bvecs` reports. With ``affine``: ``axis`` is a WORLD axis
    and the table is changed so that the world gradients MRtrix reads from it (``-fslgrad``) have that component
    negated: ``b' = S R^T F R S b`` (module docstring). For an axis-aligned, non-permuted affine both give the
    same table; for a permuted or oblique one they differ.
    """
    table = np.asarray(bvecs, dtype=float)
    if table.ndim != 2 or 3 not in table.shape:
        raise ValueError(f"expected a (3, N) or (N, 3) b-vector table, got shape {table.shape}")
    rows = table.shape[0] == 3
    vectors = table.T if rows else table  # (N, 3)
    if affine is None:
        matrix = flip_matrix(axis)
    else:
        r, s = rotation(affine), fsl_sign(affine)
        matrix = s @ r.T @ flip_matrix(axis) @ r @ s
    flipped = vectors @ matrix.T
    return np.ascontiguousarray(flipped.T if rows else flipped)
