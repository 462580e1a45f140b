"""``--super_resolution``: the input resampled to the model's 1.25 mm before anything else, and the outputs left on
that grid (upstream TractSeg 2.10: ``bin/TractSeg`` calls ``img_utils.change_spacing_4D(data_img, 1.25)`` right
after loading; its ``new_shape = floor(shape * spacing / 1.25)`` from the affine's [0, 0], the diagonal set to
+-1.25 with the old signs, the offsets kept, and DIPY's ``AffineMap.transform(..., interpolation="nearest")`` per
channel). DIPY is upstream's tool for it and ours: the nearest-neighbour rule at the exact half-voxel ties that a
2.5 -> 1.25 mm grid makes decides which voxel is copied, so the same call gives the same grid. Like upstream's,
only the diagonal of the affine is read: an oblique affine keeps its rotation terms and gets the new spacing on
the diagonal.
"""
from __future__ import annotations

import numpy as np

from runtime.host import require_dipy

MODEL_SPACING = 1.25  # mm: the resolution TractSeg's models were trained at


def model_spacing_grid(affine: np.ndarray, shape: tuple[int, ...],
                       spacing: float = MODEL_SPACING) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The new grid: (affine, shape), upstream's arithmetic."""
    new_affine = np.array(affine, dtype=np.float64, copy=True)
    for axis in range(3):
        new_affine[axis, axis] = spacing if affine[axis, axis] > 0 else -spacing
    scale = abs(affine[0, 0]) / spacing
    new_shape = np.floor(np.array(shape[:3]) * scale).astype(int)
    return new_affine, (int(new_shape[0]), int(new_shape[1]), int(new_shape[2]))


def to_model_spacing(data: np.ndarray, affine: np.ndarray,
                     spacing: float = MODEL_SPACING) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y, Z, C) peaks resampled to ``spacing`` by nearest neighbour; returns (data float32, affine)."""
    require_dipy("super_resolution")
    from dipy.align.imaffine import AffineMap

    new_affine, new_shape = model_spacing_grid(affine, data.shape, spacing)
    mapping = AffineMap(np.eye(4), domain_grid_shape=new_shape, domain_grid2world=new_affine,
                        codomain_grid_shape=data.shape, codomain_grid2world=affine)  # upstream's 4D shape
    out = np.empty((*new_shape, data.shape[3]), dtype=np.float32)
    for channel in range(data.shape[3]):
        out[..., channel] = mapping.transform(np.ascontiguousarray(data[..., channel], dtype=np.float64),
                                              interpolation="nearest")
    return out, new_affine
