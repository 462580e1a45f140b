"""The b-vector check of a raw DWI (MRtrix ``dwigradcheck``'s job, without MRtrix): a quick DTI fit, then the
coherence score of its principal-eigenvector field for the bvecs as given and with each row negated.

No refit per flip: negating row v of the FSL bvecs turns the world gradients ``g`` into ``Q_v g`` with the
reflection ``Q_v = R F_v R^T`` (:mod:`runtime.orientation.flips`), and a tensor fitted to reflected gradients is
the reflected tensor, so its principal eigenvector is ``Q_v e``. Scoring ``Q_v e`` is scoring the step direction
``Q_v e_i`` on the field ``e`` (:mod:`runtime.orientation.coherence`).

Steps: every input check of the raw-DWI path (:func:`runtime.diffusion.inputs.check_inputs`); the b0s and the
lowest diffusion shell (b ~ 1000 on most protocols: where the tensor model fits best) read volume by volume; the
brain mask given (or upstream's ``nodif_brain_mask.nii.gz`` beside the DWI), else dipy's ``median_otsu`` on the
mean b0; dipy's least-squares ``TensorModel`` fit in the mask, gradients turned into world axes as MRtrix's
``-fslgrad`` does (:func:`runtime.diffusion.dipy_engine.world_gradients`); voxels with FA >= :data:`FA_MIN` are
scored, every mask voxel may be stepped on. Needs dipy (the ``diffusion`` extra).
"""
from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np

from runtime.diffusion.dipy_engine import world_gradients
from runtime.diffusion.inputs import B0_THRESHOLD, check_inputs, default_brain_mask, shell_masks
from runtime.errors import InputError, one_line
from runtime.host import require_dipy
from runtime.orientation.coherence import verdict
from runtime.orientation.flips import bvec_row_flips
from runtime.orientation.result import OrientationResult

# Voxels scored: FA >= FA_MIN (white matter with one clear direction). On the DWI simulated from the example peaks
# (benchmarks/orientation.py, SNR 30) FA_MIN 0.3 / 0.4 / 0.5 / 0.6 gave margins 0.049 / 0.071 / 0.088 / 0.106 at
# 15.8 / 13.4 / 10.6 / 8.7 SE (0.7: 356 voxels, 4.3 SE); 0.4 also keeps out grey matter whose FA is noise at low SNR.
FA_MIN = 0.4
MEDIAN_RADIUS = 2
MEDIAN_PASSES = 1


def _volumes(image: nib.Nifti1Image, volumes: np.ndarray, path: Path) -> np.ndarray:
    """The chosen volumes (X, Y, Z, V) float32, read one at a time in file order: with the image loaded with
    ``keep_file_open=True`` a .nii.gz is decompressed once (a fresh gzip stream per volume costs O(V^2))."""
    out = np.empty((*image.shape[:3], len(volumes)), dtype=np.float32)
    try:
        for k, volume in enumerate(volumes):
            out[..., k] = np.asarray(image.dataobj[..., int(volume)], dtype=np.float32)
    except Exception as error:  # truncated gzip, short file
        raise InputError(f"{path}: cannot read the data, file truncated or corrupt ({one_line(error, 160)})") from error
    if not np.isfinite(out).all():
        np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return out


def _mask(mask_path: Path | None, b0: np.ndarray) -> np.ndarray:
    if mask_path is not None:
        mask = np.asarray(nib.load(mask_path).dataobj)
        return (mask.reshape(mask.shape[:3]) > 0) & (b0 > 0)
    from dipy.segment.mask import median_otsu

    _, mask = median_otsu(b0, median_radius=MEDIAN_RADIUS, numpass=MEDIAN_PASSES)
    return mask & (b0 > 0)


def principal_directions(dwi: str | os.PathLike[str], bvals: str | os.PathLike[str] | None = None,
                         bvecs: str | os.PathLike[str] | None = None,
                         brain_mask: str | os.PathLike[str] | None = None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(principal eigenvectors (X, Y, Z, 3) in world axes, FA (X, Y, Z), mask, affine) of a DTI fit."""
    if brain_mask is None:
        brain_mask = default_brain_mask(dwi)
    inputs = check_inputs(dwi, bvals, bvecs, brain_mask)
    require_dipy("orientation")
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import TensorModel

    shell = shell_masks(inputs.bval_array)[0]
    volumes = np.flatnonzero(inputs.b0s | shell)
    image = nib.load(inputs.dwi, keep_file_open=True)  # one gzip stream: each volume costs only its own bytes
    data = _volumes(image, volumes, inputs.dwi)
    b0 = data[..., inputs.b0s[volumes]].mean(axis=-1)
    mask = _mask(inputs.brain_mask, b0)
    if not mask.any():
        raise InputError(f"{inputs.dwi}: no brain voxel (empty mask or zero b0 signal)")
    gradients = world_gradients(inputs.bvec_array[volumes], inputs.affine)
    table = gradient_table(inputs.bval_array[volumes], bvecs=gradients, b0_threshold=B0_THRESHOLD)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = TensorModel(table, fit_method="LS").fit(data[mask])
        fa = np.nan_to_num(fit.fa)
    directions = np.zeros((*mask.shape, 3), dtype=np.float32)
    directions[mask] = np.nan_to_num(fit.evecs[..., :, 0])
    fa_map = np.zeros(mask.shape, dtype=np.float32)
    fa_map[mask] = fa
    return directions, fa_map, mask, np.asarray(inputs.affine, dtype=float)


def check_bvecs(dwi: str | os.PathLike[str], bvals: str | os.PathLike[str] | None = None,
                bvecs: str | os.PathLike[str] | None = None,
                brain_mask: str | os.PathLike[str] | None = None) -> OrientationResult:
    """Is the DTI field of ``dwi`` most coherent with the bvecs as given, or with one row of the bvecs file negated?
    ``flip`` names the row ("x" = row 1); for an axis-aligned, non-permuted affine that is also the world axis."""
    started = time.perf_counter()
    directions, fa, mask, affine = principal_directions(dwi, bvals, bvecs, brain_mask)
    return verdict(directions, mask & (fa >= FA_MIN), mask, affine, bvec_row_flips(affine), "bvecs", started)
