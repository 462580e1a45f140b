"""The subject's image that is registered to the FA template (the moving image).

* peaks: the first peak's length (its FOD amplitude), scaled to [0, 1] by its 99.5th percentile inside the brain,
  so a few very large amplitudes do not squeeze the mutual-information histogram. Mutual information needs no
  equal intensities, only a shared structure: white matter bright, grey matter and CSF dark, as in FA.
* a user's FA image (``--fa``): used as it is (:func:`as_moving`).
* raw DWI: FA of a dipy tensor fit, as upstream's ``calc_FA`` (``dti.TensorModel``, default WLS, dipy's default
  ``gradient_table``; NaN as 0), fitted slab by slab so an HCP-size series never doubles in float64."""
from __future__ import annotations

import numpy as np

from runtime.errors import InputError, one_line
from runtime.host import require_dipy
from runtime.preprocess.grids import check_affine

SCALE_PERCENTILE = 99.5


def as_moving(image: np.ndarray, what: str = "the FA image") -> np.ndarray:
    """A 3D, finite (NaN and inf as 0), non-empty float32 image; one line naming ``what`` otherwise."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 4 and image.shape[3] == 1:
        image = image[..., 0]
    if image.ndim != 3:
        raise InputError(f"{what}: must be 3D for the registration, not shape {image.shape}")
    image = np.nan_to_num(image, nan=0.0, posinf=0.0, neginf=0.0)
    if not np.any(image > 0):
        raise InputError(f"{what}: nothing above 0 to register to the MNI template")
    return image


def subject_fa_like(peaks_data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The first-peak length of (X, Y, Z, 9) peaks (or any (X, Y, Z, 3k)), in [0, 1], float32, on the peaks' own
    grid (``affine`` is checked: the caller registers the map with it)."""
    check_affine(affine, "the peaks")
    peaks = np.asarray(peaks_data)
    if peaks.ndim != 4 or peaks.shape[3] < 3:
        raise InputError(f"the peaks: (X, Y, Z, 9) expected, not shape {peaks.shape}")
    length = np.linalg.norm(np.nan_to_num(np.asarray(peaks[..., :3], dtype=np.float32), nan=0.0, posinf=0.0,
                                          neginf=0.0), axis=-1)
    inside = length[length > 0]
    if inside.size == 0:
        raise InputError("the peaks: every first peak is zero, nothing to register to the MNI template")
    scale = float(np.percentile(inside, SCALE_PERCENTILE)) or float(inside.max())
    return np.clip(length / scale, 0.0, 1.0).astype(np.float32)


def dwi_fa(dwi: np.ndarray, bvals: np.ndarray, bvecs: np.ndarray, mask: np.ndarray | None = None,
           slab: int = 8) -> np.ndarray:
    """FA (float32, [0, 1]) of a 4D DWI from a dipy tensor fit. ``bvecs`` (3, N) or (N, 3). ``mask``: the brain
    mask (>= 0.5 inside, as upstream's ``calc_FA``); None: every voxel whose mean signal is above 0. 0 outside.
    (``tractseg-aot-tools calc_FA`` is the file-level twin with upstream's checks.)"""
    require_dipy("preprocess")
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import TensorModel

    dwi = np.asarray(dwi)
    bvecs = np.asarray(bvecs, dtype=np.float64)
    if bvecs.ndim == 2 and bvecs.shape[0] == 3 and bvecs.shape[1] != 3:
        bvecs = bvecs.T
    if dwi.ndim != 4 or len(bvals) != dwi.shape[3] or bvecs.shape != (dwi.shape[3], 3):
        raise InputError(f"the DWI: shape {dwi.shape} does not match {len(bvals)} b-values and b-vectors "
                         f"{bvecs.shape}")
    try:
        model = TensorModel(gradient_table(np.asarray(bvals, dtype=np.float64), bvecs=bvecs))
    except ValueError as error:
        raise InputError(f"the DWI's gradient table: {one_line(error, 150)}") from None
    fa = np.zeros(dwi.shape[:3], dtype=np.float32)
    for z0 in range(0, dwi.shape[2], slab):
        z1 = min(dwi.shape[2], z0 + slab)
        block = np.asarray(dwi[:, :, z0:z1], dtype=np.float64)
        inside = np.all(np.isfinite(block), axis=-1)
        inside &= (np.nan_to_num(block).mean(axis=-1) > 0) if mask is None else ~(np.asarray(mask[:, :, z0:z1]) < 0.5)
        if inside.any():
            fa[:, :, z0:z1] = np.nan_to_num(model.fit(block, mask=inside).fa, nan=0.0) * inside
    return np.clip(fa, 0.0, 1.0)
