"""The ``dipy`` engine: brain mask, single-shell CSD response, CSD fit and sh2peaks-style peaks, pure Python.

Mirrors (TractSeg 2.10 ``create_fods`` with ``csd_type csd``, which runs MRtrix 3.0.x):

| step | upstream (MRtrix) | here (dipy) |
|---|---|---|
| gradients | ``-fslgrad BVECS BVALS``: bvecs x negated when the affine's determinant is > 0, then rotated by the affine's rotation into world coordinates | the same arithmetic (:func:`world_gradients`) |
| shell | ``dwi2fod csd`` uses the b0s and the largest shell | the same |
| brain mask | FSL ``bet -f 0.3`` (not available) | ``median_otsu`` on the b0s, median radius 2, one pass, when none is given (dipy's defaults, radius 4 and 4 passes, spilled into the background or lost half the brain on our small phantoms; not measured on real brains) |
| response | ``dwi2response tournier`` (iterative single-fibre voxel selection, then ``amp2response``: zonal SH of the signal against the angle to each voxel's fibre) | the brain-mask voxels with FA > 0.7 (the 300 highest-FA voxels when fewer than 30 pass; dipy ``TensorModel``), their signals against the angle to the tensor's principal direction, one pooled zonal-SH fit, lmax 8 (:func:`~runtime.diffusion.csd_fit.zonal_response`) |
| FOD | ``dwi2fod csd`` (lmax 8, neg_lambda 1, norm_lambda 1, threshold 0, 300 directions) | MRtrix's algorithm and constants in numpy (:mod:`runtime.diffusion.csd_fit`; dipy's own CSD regularises differently and gave 1.33x MRtrix's peak amplitudes on the same response) |
| peaks | ``sh2peaks`` | :mod:`runtime.diffusion.sh_peaks` |

The fit runs in ``nthreads`` worker processes (every core by default) on chunks of the mask's voxels.
"""
from __future__ import annotations

import logging
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from runtime.diffusion.inputs import DiffusionInputs, shell_masks
from runtime.errors import InputError, one_line
from runtime.host import require_dipy

log = logging.getLogger("tractseg_aot")
SH_ORDER = 8
FA_THRESHOLD = 0.7
MIN_RESPONSE_VOXELS = 30
FALLBACK_RESPONSE_VOXELS = 300
CHUNK_VOXELS = 2000
MEDIAN_RADIUS = 2
MEDIAN_PASSES = 1




def read_dwi(path: str | os.PathLike[str]) -> np.ndarray:
    """The DWI's data as float32; a truncated or corrupt file is one line naming it. Voxels with a non-finite
    value (NaN, inf) are set to 0 in every volume, with a warning: outside the data, as MRtrix treats them (dipy's
    fit does not converge on them)."""
    import nibabel as nib

    try:
        data = np.asarray(nib.load(path).get_fdata(dtype=np.float32))
    except MemoryError:
        raise
    except Exception as error:  # truncated gzip (EOFError, zlib.error), short file (ValueError, OSError)
        raise InputError(f"{path}: cannot read the data, file truncated or corrupt ({one_line(error, 120)})") \
            from None
    bad = ~np.isfinite(data).all(axis=-1)
    if bad.any():
        data[bad] = 0.0
        log.warning("%s: %d voxel(s) hold NaN or inf values; they are left out (set to 0)", path, int(bad.sum()))
    return data


def world_gradients(bvecs_fsl: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """MRtrix ``DWI::load_bvecs_bvals``: negate x when det(affine[:3, :3]) > 0, then rotate by the rotation of the
    affine's linear part (polar decomposition, Eigen's ``rotation()``). Rows stay unit (or zero)."""
    g = np.array(bvecs_fsl, dtype=float)
    if np.linalg.det(affine[:3, :3]) > 0:
        g[:, 0] *= -1
    u, _, vt = np.linalg.svd(affine[:3, :3])
    g = g @ (u @ vt).T
    norms = np.linalg.norm(g, axis=1, keepdims=True)
    return np.divide(g, norms, out=np.zeros_like(g), where=norms > 0)


@dataclass(frozen=True)
class DipyOutput:
    peaks: np.ndarray  # (X, Y, Z, 9) float32
    mask: np.ndarray  # (X, Y, Z) bool
    mask_source: str
    timings: dict[str, float]


_CSD = None


def _init_worker(csd) -> None:
    global _CSD
    _CSD = csd


def _fit_chunk(signals: np.ndarray) -> np.ndarray:
    from runtime.diffusion.sh_peaks import SHEvaluator, peaks_sh2peaks_style, search_sphere

    return peaks_sh2peaks_style(_CSD.fit(signals), search_sphere(), SHEvaluator(SH_ORDER))


def single_fibre_response(gtab, data: np.ndarray, mask: np.ndarray, shell: np.ndarray) -> np.ndarray:
    """Zonal SH coefficients of the response: the mask's voxels with FA > 0.7 (else the 300 highest-FA), their
    ``shell`` signals against the angle to their tensor's principal direction."""
    from dipy.reconst.dti import TensorModel

    from runtime.diffusion.csd_fit import zonal_response

    fa = np.zeros(mask.shape)
    fit = TensorModel(gtab).fit(data, mask=mask)
    fa[mask] = np.nan_to_num(fit.fa[mask])
    chosen = mask & (fa > FA_THRESHOLD)
    if chosen.sum() < MIN_RESPONSE_VOXELS:
        flat = np.argsort(np.where(mask, fa, -1.0), axis=None)[::-1][:FALLBACK_RESPONSE_VOXELS]
        chosen = np.zeros(mask.shape, dtype=bool)
        chosen.flat[flat] = True
        chosen &= mask
    return zonal_response(data[chosen][:, shell], gtab.bvecs[shell], fit.evecs[chosen][..., 0], SH_ORDER)


def run(inputs: DiffusionInputs, mask: np.ndarray | None, nthreads: int | None) -> DipyOutput:
    """Compute the peaks of ``inputs`` (``mask``: the given brain mask, or None for median_otsu)."""
    require_dipy("diffusion")
    from dipy.core.gradients import gradient_table
    from dipy.segment.mask import median_otsu

    from runtime.diffusion.csd_fit import CSD

    timings: dict[str, float] = {}
    start = time.perf_counter()
    data = read_dwi(inputs.dwi)
    timings["read"] = time.perf_counter() - start

    b0 = inputs.b0s
    top_shell = shell_masks(inputs.bval_array)[-1]
    keep = b0 | top_shell
    data = data[..., keep]
    gtab = gradient_table(inputs.bval_array[keep], bvecs=world_gradients(inputs.bvec_array[keep], inputs.affine),
                          b0_threshold=10.0)

    start = time.perf_counter()
    if mask is None:
        _, mask = median_otsu(data, vol_idx=np.flatnonzero(b0[keep]), median_radius=MEDIAN_RADIUS,
                              numpass=MEDIAN_PASSES)
        mask_source = (f"dipy median_otsu on the b0s (radius {MEDIAN_RADIUS}, {MEDIAN_PASSES} pass; upstream runs "
                       f"FSL bet -f 0.3, not available)")
        if not mask.any():
            raise InputError(f"{inputs.dwi}: median_otsu found no brain voxels; give a brain mask")
    else:
        mask_source = "given"
    mask = np.asarray(mask, dtype=bool)
    timings["mask"] = time.perf_counter() - start

    start = time.perf_counter()
    shell = ~gtab.b0s_mask
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        response = single_fibre_response(gtab, data, mask, shell)
    csd = CSD.build(gtab.bvecs[shell], response, SH_ORDER)
    timings["response"] = time.perf_counter() - start

    start = time.perf_counter()
    signals = data[mask][:, shell].astype(float)
    chunks = [signals[i:i + CHUNK_VOXELS] for i in range(0, len(signals), CHUNK_VOXELS)]
    workers = max(1, min(nthreads if nthreads and nthreads > 0 else len(os.sched_getaffinity(0)), len(chunks)))
    if workers == 1:
        _init_worker(csd)
        parts = [_fit_chunk(c) for c in chunks]
    else:
        with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(csd,)) as pool:
            parts = list(pool.map(_fit_chunk, chunks))
    peaks = np.full((*mask.shape, 9), np.nan, dtype=np.float32)
    if parts:
        peaks[mask] = np.concatenate(parts)
    timings["fod_and_peaks"] = time.perf_counter() - start
    return DipyOutput(peaks, mask, mask_source, timings)
