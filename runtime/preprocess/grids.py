"""Grids and the voxel maps between them: the MNI grid at the subject's spacing (FLIRT's ``-applyisoxfm``), the map
from a target grid's voxels to a source grid's voxels under a world transform, the rotation part of a rigid
transform, and scalar resampling (nearest-neighbour by one gather for every channel, linear or cubic spline per
channel with :func:`scipy.ndimage.affine_transform`). Outside the source grid is 0."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from runtime.errors import InputError

Shape3 = tuple[int, int, int]
ORDERS = {"nearest": 0, "linear": 1, "spline": 3}


def check_affine(affine: np.ndarray, what: str) -> np.ndarray:
    """A finite, invertible 4x4 (one line naming ``what`` otherwise), as float64."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(f"{what}: not a finite, invertible 4x4 affine")
    return affine


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """The length of each voxel axis in mm."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def grid_at_spacing(affine: np.ndarray, shape: tuple[int, ...], spacing_mm: float) -> tuple[np.ndarray, Shape3]:
    """The same field of view at isotropic ``spacing_mm``, as FLIRT's ``-applyisoxfm``: each axis keeps its
    direction, voxel 0's centre stays where it was, ``ceil(n * old / new)`` voxels (the MNI template, 145x174x145
    at 1.25 mm, gives 73x87x73 at 2.5 mm with origin (90, -126, -72): the example peaks' grid)."""
    affine = np.asarray(affine, dtype=np.float64)
    old = voxel_sizes(affine)
    new = affine.copy()
    new[:3, :3] = affine[:3, :3] * (spacing_mm / old)
    dims = tuple(max(1, int(np.ceil(n * o / spacing_mm - 1e-6))) for n, o in zip(shape[:3], old))
    return new, dims  # type: ignore[return-value]


def voxel_map(target_affine: np.ndarray, source_affine: np.ndarray,
              target_to_source: np.ndarray | None = None) -> np.ndarray:
    """4x4 from target voxel indices to source voxel indices; ``target_to_source`` maps target world mm to
    source world mm (None: the same world)."""
    world = np.eye(4) if target_to_source is None else np.asarray(target_to_source, dtype=np.float64)
    return np.linalg.inv(np.asarray(source_affine, dtype=np.float64)) @ world @ np.asarray(target_affine,
                                                                                           dtype=np.float64)


def rotation_of(transform: np.ndarray) -> np.ndarray:
    """The rotation of a (near-)rigid 4x4 or 3x3: the closest proper rotation to its 3x3 part (polar
    decomposition), so a transform with a little scaling or rounding still rotates vectors without resizing them."""
    u, _, vt = np.linalg.svd(np.asarray(transform, dtype=np.float64)[:3, :3])
    rotation = u @ vt
    if np.linalg.det(rotation) < 0:
        raise InputError("the transform reflects (negative determinant): not a rigid motion")
    return rotation


def target_voxels(shape: Shape3, z_start: int, z_stop: int) -> np.ndarray:
    """(n, 3) float64 voxel indices of the slab ``z_start:z_stop`` of a grid, C order."""
    grid = np.mgrid[0:shape[0], 0:shape[1], z_start:z_stop]
    return grid.reshape(3, -1).T.astype(np.float64)


def slab_depth(shape: Shape3, voxels: int = 1 << 18) -> int:
    """How many z slices make a slab of about ``voxels`` voxels."""
    return max(1, voxels // max(1, shape[0] * shape[1]))


def nearest(volume: np.ndarray, matrix: np.ndarray, shape: Shape3) -> np.ndarray:
    """Nearest-neighbour resampling of a 3D or channels-last 4D volume; the dtype is kept. One gather per slab
    serves every channel (a 72-bundle stack costs about one channel's time)."""
    out = np.zeros((*shape, *volume.shape[3:]), dtype=volume.dtype)
    flat = volume.reshape(int(np.prod(volume.shape[:3])), -1)
    step = slab_depth(shape)
    for z0 in range(0, shape[2], step):
        z1 = min(shape[2], z0 + step)
        source = target_voxels(shape, z0, z1) @ matrix[:3, :3].T + matrix[:3, 3]
        index = np.floor(source + 0.5).astype(np.int64)
        inside = np.all((index >= 0) & (index < np.array(volume.shape[:3])), axis=1)
        values = np.zeros((len(index), flat.shape[1]), dtype=volume.dtype)
        values[inside] = flat[np.ravel_multi_index(index[inside].T, volume.shape[:3])]
        out[:, :, z0:z1] = values.reshape(shape[0], shape[1], z1 - z0, *volume.shape[3:])
    return out


def interpolate(volume: np.ndarray, matrix: np.ndarray, shape: Shape3, order: int) -> np.ndarray:
    """Linear (``order`` 1) or cubic B-spline (3, prefiltered, as FLIRT's ``-interp spline``) resampling of a 3D
    or channels-last 4D volume, channel by channel, as float32."""
    out = np.zeros((*shape, *volume.shape[3:]), dtype=np.float32)
    channels = volume.reshape(*volume.shape[:3], -1)
    view = out.reshape(*shape, -1)
    for c in range(channels.shape[3]):
        view[..., c] = ndimage.affine_transform(np.asarray(channels[..., c], dtype=np.float32), matrix,
                                                output_shape=shape, order=order, mode="constant", cval=0.0,
                                                prefilter=order > 1)
    return out


def resample_scalar(volume: np.ndarray, matrix: np.ndarray, shape: Shape3, interpolation: str) -> np.ndarray:
    """``interpolation``: "nearest" (dtype kept), "linear" or "spline" (float32)."""
    if interpolation not in ORDERS:
        raise ValueError(f"interpolation must be one of {sorted(ORDERS)}, not {interpolation!r}")
    if ORDERS[interpolation] == 0:
        return nearest(volume, matrix, shape)
    return interpolate(volume, matrix, shape, ORDERS[interpolation])
