"""Resampling fields of direction vectors (peaks: 3 per voxel, 9 channels; a TOM: 1, 3 channels), with each vector
rotated by the rigid motion's rotation (the vectors are in world axes, as MRtrix writes peaks).

A peak's sign carries no meaning (MRtrix's ``sh2peaks`` writes whichever copy its search reached: on the example
peaks 33% of neighbouring first peaks point opposite ways), and neighbours list two crossing fibres in either order
(by amplitude), so plain per-channel trilinear interpolation cancels v and -v into a short vector and mixes two
fibres into a direction neither has. "linear" here is trilinear interpolation after each corner's peaks are
matched to the peaks of the corner that weighs most (weight times length): reordered to the best of the k!
orders by |cos|, and each turned to agree in sign with its match; the result is ordered strongest first again.
"nearest" copies the nearest voxel's vectors."""
from __future__ import annotations

from itertools import permutations

import numpy as np
from scipy import ndimage

from runtime.preprocess.grids import Shape3, nearest, slab_depth, target_voxels

VECTOR_INTERPOLATIONS = ("linear", "nearest")
_CORNERS = np.array([(i, j, k) for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=np.int64)


def _gather(flat: np.ndarray, dims: np.ndarray, index: np.ndarray) -> np.ndarray:
    """flat[(x, y, z)] for (n, 3) indices, 0 where outside."""
    inside = np.all((index >= 0) & (index < dims), axis=1)
    values = np.zeros((len(index), flat.shape[1]), dtype=np.float32)
    values[inside] = flat[np.ravel_multi_index(index[inside].T, tuple(dims))]
    return np.nan_to_num(values, copy=False, nan=0.0, posinf=0.0, neginf=0.0)


def _length(vectors: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("...k,...k->...", vectors, vectors))


def _matched(corners: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Each corner's peaks reordered to best match (sum of |cos|) the peaks of the reference corner (the one that
    weighs most: weight times total length), then each turned to agree in sign with its reference peak."""
    n, _, n_vectors, _ = corners.shape
    lengths = _length(corners)                                                          # (n, 8, P)
    reference = corners[np.arange(n), np.argmax(weights * lengths.sum(axis=-1), axis=1)]  # (n, P, 3)
    if n_vectors > 1:
        unit = corners / np.maximum(lengths, 1e-12)[..., None]
        ref_unit = reference / np.maximum(_length(reference), 1e-12)[..., None]
        cosine = np.abs(np.matmul(unit, ref_unit[:, None].transpose(0, 1, 3, 2)))      # (n, 8, Q, P)
        orders = np.array(list(permutations(range(n_vectors))))                         # (P!, P): p <- q
        score = cosine[:, :, orders, np.arange(n_vectors)].sum(axis=-1)                 # (n, 8, P!)
        best = orders[np.argmax(score, axis=-1)]                                         # (n, 8, P)
        corners = np.take_along_axis(corners, best[..., None], axis=2)
    signs = np.where(np.einsum("ncpk,npk->ncp", corners, reference) < 0, -1.0, 1.0).astype(np.float32)
    return corners * signs[..., None]


def _sign_aware_trilinear(flat: np.ndarray, dims: np.ndarray, source: np.ndarray, n_vectors: int) -> np.ndarray:
    base = np.floor(source).astype(np.int64)
    frac = (source - base).astype(np.float32)
    corners = np.empty((len(source), 8, n_vectors, 3), dtype=np.float32)
    weights = np.empty((len(source), 8), dtype=np.float32)
    for c, offset in enumerate(_CORNERS):
        corners[:, c] = _gather(flat, dims, base + offset).reshape(-1, n_vectors, 3)
        weights[:, c] = np.prod(np.where(offset == 1, frac, 1.0 - frac), axis=1)
    vectors = np.einsum("nc,ncpk->npk", weights, _matched(corners, weights))
    if n_vectors > 1:  # strongest first again, as sh2peaks orders them
        order = np.argsort(-_length(vectors), axis=1, kind="stable")
        vectors = np.take_along_axis(vectors, order[..., None], axis=1)
    return vectors


def resample_vectors(field: np.ndarray, matrix: np.ndarray, shape: Shape3, rotation: np.ndarray,
                     interpolation: str = "linear") -> np.ndarray:
    """``field`` (X, Y, Z, 3k) world vectors resampled onto a grid of ``shape`` whose voxel v reads the field at
    voxel ``matrix @ v``, every vector then rotated by ``rotation`` (3x3). float32 (*shape, 3k); 0 outside.
    NaN and inf read as 0 (MRtrix writes NaN outside the brain), without a copy of the field."""
    if field.ndim != 4 or field.shape[3] % 3:
        raise ValueError(f"a vector field is (X, Y, Z, 3k), not {field.shape}")
    if interpolation not in VECTOR_INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {VECTOR_INTERPOLATIONS}, not {interpolation!r}")
    n_vectors = field.shape[3] // 3
    rotation_t = np.asarray(rotation, dtype=np.float32).T
    if interpolation == "nearest":
        moved = np.nan_to_num(nearest(np.asarray(field, dtype=np.float32), matrix, shape), copy=False, nan=0.0,
                              posinf=0.0, neginf=0.0)
        return (moved.reshape(*shape, n_vectors, 3) @ rotation_t).reshape(*shape, 3 * n_vectors)
    flat = np.asarray(field, dtype=np.float32).reshape(-1, field.shape[3])
    dims = np.array(field.shape[:3])
    # only target voxels with a non-zero corner are computed (the brain, not the box around it)
    near = ndimage.binary_dilation(np.any(flat != 0, axis=1).reshape(field.shape[:3]), np.ones((3, 3, 3), bool))
    # (NaN != 0: a NaN voxel counts as near, harmlessly)
    out = np.zeros((*shape, field.shape[3]), dtype=np.float32)
    step = slab_depth(shape)
    for z0 in range(0, shape[2], step):
        z1 = min(shape[2], z0 + step)
        source = target_voxels(shape, z0, z1) @ matrix[:3, :3].T + matrix[:3, 3]
        nearest_index = np.clip(np.floor(source + 0.5).astype(np.int64), 0, dims - 1)
        rows = np.flatnonzero(near[tuple(nearest_index.T)])
        slab = np.zeros((len(source), field.shape[3]), dtype=np.float32)
        for part in np.array_split(rows, max(1, len(rows) // (1 << 15))):
            vectors = _sign_aware_trilinear(flat, dims, source[part], n_vectors) @ rotation_t
            slab[part] = vectors.reshape(len(part), field.shape[3])
        out[:, :, z0:z1] = slab.reshape(shape[0], shape[1], z1 - z0, field.shape[3])
    return out


def rotate_vectors(field: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Every 3-vector of a (..., 3k) field rotated by ``rotation`` (3x3), float32."""
    field = np.asarray(field, dtype=np.float32)
    n_vectors = field.shape[-1] // 3
    moved = field.reshape(*field.shape[:-1], n_vectors, 3) @ np.asarray(rotation, dtype=np.float32).T
    return moved.reshape(field.shape)
