"""Rigid (6 DOF) registration of the subject's FA-like image to the MNI FA template with DIPY's ``dipy.align``, as
upstream's ``flirt -dof 6 -cost mutualinfo -searchcost mutualinfo``: Mattes mutual information (32 bins, every
voxel sampled: deterministic), a 3-level scale space (factors 4, 2, 1; smoothing 3, 1, 0 voxels), started at the
centres of mass, then translation, then rigid, each by L-BFGS-B; both images smoothed by 1 voxel first.

Both images are first brought to a working grid of ``spacing_mm`` (default: the moving image's coarsest voxel
size, at least 2 mm; each image's own field of view and axes, Gaussian-smoothed before sampling down), so an
HCP-size subject or the 1.25 mm template cost what a 2 mm registration costs; the template's grid is moved off by a
fraction of a voxel (:data:`TEMPLATE_OFFSET`).

The result is ``subject_to_mni``: a 4x4 from subject world mm to MNI world mm (what FLIRT's ``FA_2_MNI.mat``
means, in world rather than FSL's scaled-voxel coordinates); its inverse maps MNI to the subject."""
from __future__ import annotations

import logging
import warnings

import numpy as np
from scipy import ndimage

from runtime.errors import InputError, one_line
from runtime.host import require_dipy
from runtime.preprocess.fa import as_moving
from runtime.preprocess.grids import check_affine, grid_at_spacing, interpolate, voxel_map, voxel_sizes

MIN_SPACING_MM = 2.0
NBINS = 32
LEVEL_ITERS = (1000, 500, 100)
SIGMAS = (3.0, 1.0, 0.0)
FACTORS = (4, 2, 1)
# The template's working grid is moved off the subject's by these fractions of a voxel. Subjects are often stored on
# the template's own grid (the example peaks, HCP data): two grids whose voxel centres coincide make mutual
# information peak at the grid-aligned pose (interpolation smooths every other pose; Pluim et al. 2000), which
# pulled the example peaks' registration 1.1 degrees towards the identity.
TEMPLATE_OFFSET = (0.37, 0.41, 0.29)
# Both working images are smoothed by this many voxels before dipy's scale space (whose finest level is never
# smoothed): a subject resampled once (any rotation blurs it a little) otherwise moves the optimum against the
# template by up to 0.7 degrees and 1.5 mm; with it, by 0.3 degrees and 0.9 mm (benchmarks/preprocess.py).
PRESMOOTH_VOXELS = 1.0


def working_spacing(moving_affine: np.ndarray, spacing_mm: float | None = None) -> float:
    """``spacing_mm``, else the moving image's coarsest voxel size, at least :data:`MIN_SPACING_MM`."""
    if spacing_mm is not None:
        if not np.isfinite(spacing_mm) or spacing_mm <= 0:
            raise InputError(f"registration spacing must be a positive number of mm, not {spacing_mm}")
        return float(spacing_mm)
    return max(MIN_SPACING_MM, float(voxel_sizes(moving_affine).max()))


def on_working_grid(image: np.ndarray, affine: np.ndarray, spacing_mm: float,
                    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """``image`` on its own field of view at ``spacing_mm``, its voxel centres moved by ``offset`` voxels,
    Gaussian-smoothed first (sigma ``(f - 1) / 2`` voxels for a sampling-down factor ``f`` per axis); unchanged
    when it is not finer than that and ``offset`` is 0."""
    factors = spacing_mm / voxel_sizes(affine)
    if np.all(factors <= 1.0 + 1e-6) and not np.any(offset):
        return image, affine
    smooth = ndimage.gaussian_filter(image, sigma=np.maximum(factors - 1.0, 0.0) / 2.0, mode="constant")
    new_affine, shape = grid_at_spacing(affine, image.shape, spacing_mm)
    new_affine[:3, 3] += new_affine[:3, :3] @ np.asarray(offset, dtype=np.float64)
    return interpolate(smooth, voxel_map(new_affine, affine), shape, 1), new_affine


def register_rigid(moving: np.ndarray, moving_affine: np.ndarray, template: np.ndarray,
                   template_affine: np.ndarray, *, spacing_mm: float | None = None,
                   level_iters: tuple[int, ...] = LEVEL_ITERS, nbins: int = NBINS) -> np.ndarray:
    """The rigid 4x4 ``subject_to_mni`` (world mm -> world mm) that best aligns ``moving`` (the subject's FA or
    FA-like image on ``moving_affine``) with ``template`` (on ``template_affine``). Deterministic."""
    require_dipy("preprocess")
    from dipy.align.imaffine import (AffineInvalidValuesError, AffineInversionError, AffineRegistration,
                                     MutualInformationMetric, transform_centers_of_mass)
    from dipy.align.transforms import RigidTransform3D, TranslationTransform3D

    moving_affine = check_affine(moving_affine, "the subject image")
    template_affine = check_affine(template_affine, "the MNI template")
    spacing = working_spacing(moving_affine, spacing_mm)
    moving, moving_affine = on_working_grid(as_moving(moving, "the subject image"), moving_affine, spacing)
    static, static_affine = on_working_grid(as_moving(template, "the MNI template"), template_affine, spacing,
                                            TEMPLATE_OFFSET)
    moving = ndimage.gaussian_filter(moving, PRESMOOTH_VOXELS, mode="constant")
    static = ndimage.gaussian_filter(static, PRESMOOTH_VOXELS, mode="constant")
    dipy_log = logging.getLogger("dipy")
    level = dipy_log.level
    dipy_log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            grids = {"static_grid2world": static_affine, "moving_grid2world": moving_affine}
            start = transform_centers_of_mass(static, static_affine, moving, moving_affine).affine
            registration = AffineRegistration(
                metric=MutualInformationMetric(nbins=nbins, sampling_proportion=None),
                level_iters=list(level_iters), sigmas=list(SIGMAS[-len(level_iters):]),
                factors=list(FACTORS[-len(level_iters):]), verbosity=0)
            for transform in (TranslationTransform3D(), RigidTransform3D()):
                start = registration.optimize(static, moving, transform, None, **grids,
                                              starting_affine=start).affine
    except (AffineInversionError, AffineInvalidValuesError, ValueError, np.linalg.LinAlgError) as error:
        raise InputError(f"rigid registration to the MNI template failed: {one_line(error, 150)}") from None
    finally:
        dipy_log.setLevel(level)
    if not np.isfinite(start).all():
        raise InputError("rigid registration to the MNI template failed: a non-finite transform")
    # dipy's map takes static (MNI) world points to moving (subject) world points
    return np.linalg.inv(start)


def rigid_difference(a: np.ndarray, b: np.ndarray, points: np.ndarray | None = None) -> tuple[float, float]:
    """How far two rigid 4x4s are apart: the angle of ``a``'s rotation relative to ``b``'s (degrees) and the
    largest distance (mm) between where they send ``points`` ((n, 3) world mm; default the world origin)."""
    relative = np.asarray(a, dtype=np.float64)[:3, :3] @ np.asarray(b, dtype=np.float64)[:3, :3].T
    cos = np.clip((np.trace(relative) - 1.0) / 2.0, -1.0, 1.0)
    pts = np.zeros((1, 3)) if points is None else np.asarray(points, dtype=np.float64).reshape(-1, 3)
    moved_a = pts @ np.asarray(a)[:3, :3].T + np.asarray(a)[:3, 3]
    moved_b = pts @ np.asarray(b)[:3, :3].T + np.asarray(b)[:3, 3]
    return float(np.degrees(np.arccos(cos))), float(np.linalg.norm(moved_a - moved_b, axis=1).max())
