"""``calc_FA -i DWI -o FA --bvals B --bvecs V --brain_mask M``: the fractional anisotropy of a DTI fit.

Mirrors ``bin/calc_FA`` (TractSeg 2.10), which needs no FSL: it is dipy throughout, and so is this (the
``diffusion`` extra). The same steps with the same dipy calls: the DWI read with ``get_fdata()`` (float64); FSL
bvals/bvecs (3 rows or 3 columns, as dipy's ``read_bvals_bvecs``); dipy's ``gradient_table`` with its defaults
(b0 threshold 50, unit tolerance 0.01); ``TensorModel`` with its default weighted least squares; voxels where the
mask is < 0.5 left out of the fit (upstream zeroes them and fits them, which gives FA 0 there too, measured equal);
``fractional_anisotropy`` of the eigenvalues, NaN set to 0; written float32 with the DWI's affine and a fresh header.

Refused in one line naming the file (upstream crashes or writes garbage): what
:mod:`runtime.diffusion.inputs` refuses for the DWI, the bvals/bvecs and the mask (not 4D; a count that is not
the volumes'; a negative b-value; a mask on another grid or empty), a diffusion-weighted bvec that is not unit
length (dipy's check, b > 50), a scheme that cannot determine a tensor (no b0 and a single shell, or fewer than 6
non-coplanar directions: a singular design matrix, :data:`MIN_CONDITION`; dipy's pseudo-inverse would give an
arbitrary FA), no mask voxel >= 0.5, and NaN or infinite values inside the mask (dipy's SVD fails on them).
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np

from runtime.diffusion.inputs import check_mask, read_bvals, read_bvecs
from runtime.errors import InputError
from runtime.host import require_dipy
from runtime.tools.common import (
    image_shape,
    open_image,
    output_file,
    read_float64,
    write_image,
)

log = logging.getLogger("tractseg_aot")

NAME = "calc_FA"
HELP = "Generate an FA image (dipy tensor fit; needs the 'diffusion' extra)."
DIPY_B0_THRESHOLD = 50.0  # gradient_table's defaults, which upstream uses
DIPY_UNIT_TOLERANCE = 1e-2
# The tensor is determined when the design matrix (6 tensor elements and log S0), its columns scaled to unit length,
# has a smallest-to-largest singular value ratio >= this. Measured (dipy's design_matrix): 0.028 for one b0 + 300
# directions, 0.048 for one b0 + 6, 0.085 for one b0 + 30, 0.15-0.22 for 2-3 shells; degenerate: a single shell
# with no b0 gives 2.4e-5 (bvecs written with 4 decimals) or 0.0022 (2 decimals), one direction or one plane 0.
MIN_CONDITION = 1e-3


def _check_unit(bvals: np.ndarray, bvecs: np.ndarray, path: Path) -> None:
    norms = np.linalg.norm(bvecs, axis=1)
    bad = np.flatnonzero((bvals > DIPY_B0_THRESHOLD) & (np.abs(norms - 1.0) > DIPY_UNIT_TOLERANCE))
    if bad.size:
        i = int(bad[0])
        raise InputError(f"{path}: bvec of volume {i} (b={bvals[i]:g}) has length {norms[i]:.4g}, not 1 (tolerance "
                         f"{DIPY_UNIT_TOLERANCE:g}; {bad.size} such volumes)")


def _condition(design: np.ndarray) -> float:
    """Smallest over largest singular value of ``design`` with its columns scaled to unit length (0: singular)."""
    lengths = np.linalg.norm(design, axis=0)
    if not (lengths > 0).all():
        return 0.0
    values = np.linalg.svd(design / lengths, compute_uv=False)
    return float(values[-1] / values[0])


def _log_warnings(caught: list[warnings.WarningMessage]) -> None:
    for message in dict.fromkeys(" ".join(str(w.message).split()) for w in caught):
        log.warning("dipy: %s", message)


def calc_fa(file_in: str | os.PathLike[str], file_out: str | os.PathLike[str], bvals: str | os.PathLike[str],
            bvecs: str | os.PathLike[str], brain_mask: str | os.PathLike[str]) -> Path:
    """Write the FA of a DTI fit of ``file_in`` inside ``brain_mask`` to ``file_out``; returns ``file_out``."""
    dwi, bvals_path, bvecs_path, mask_path = Path(file_in), Path(bvals), Path(bvecs), Path(brain_mask)
    image = open_image(dwi)
    shape = image_shape(image)
    if len(shape) != 4 or shape[3] < 2:
        raise InputError(f"{dwi}: a {'x'.join(str(n) for n in shape)} image, expected a 4D diffusion series")
    bval_array = read_bvals(bvals_path, shape[3])
    bvec_array = read_bvecs(bvecs_path, shape[3])
    _check_unit(bval_array, bvec_array, bvecs_path)
    check_mask(mask_path, shape[:3], image.affine)
    target = output_file(file_out)
    require_dipy("calc_FA")
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import TensorModel, design_matrix, fractional_anisotropy

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            gtab = gradient_table(bval_array, bvecs=bvec_array)
        except ValueError as error:  # (the checks above make every case dipy refuses a one-line error first)
            raise InputError(f"{bvecs_path}: dipy refuses the gradient table ({error})") from None
    _log_warnings(caught)
    ratio = _condition(design_matrix(gtab))
    if ratio < MIN_CONDITION:
        raise InputError(f"{bvals_path}: with {bvecs_path}, the gradient scheme cannot determine a tensor (a b0 or a "
                         f"second shell and 6 non-coplanar directions are needed; condition {ratio:.2g})")
    mask = read_float64(open_image(mask_path), mask_path).reshape(shape[:3])
    inside = ~(mask < 0.5)  # upstream zeroes the voxels where mask < 0.5 (so a NaN mask voxel stays in)
    if not inside.any():
        raise InputError(f"{mask_path}: no voxel of the brain mask is >= 0.5")
    data = read_float64(image, dwi)
    for volume in range(shape[3]):
        bad = int(np.count_nonzero(~np.isfinite(data[..., volume][inside])))
        if bad:
            raise InputError(f"{dwi}: volume {volume} holds {bad} NaN or infinite values inside the brain mask")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = TensorModel(gtab).fit(data, mask=inside)
        fa = fractional_anisotropy(fit.evals)
    _log_warnings(caught)
    fa[np.isnan(fa)] = 0
    return write_image(fa.astype(np.float32), image.affine, target)
