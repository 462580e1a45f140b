"""From upstream's NIfTI layout to the tracker's arrays, and from the tracker's voxels back to world millimetres.

Mirrors (TractSeg 2.10):

* ``tracking.track`` (the ``tractseg`` / ``fixed_prob`` branch: loading, ``flip_axis_to_match_MNI_space`` of
  mask, beginnings, endings and TOM)                                   -> :func:`read_bundle_inputs`
* ``tractseg_prob_tracking.track`` before the pool (``flip_affine``, ``apply_rotation_to_peaks``, start/end
  masks dilated ``dilation + 1`` times, bundle mask ``dilation`` times) -> :func:`tracking_volumes`
* ``tractseg_prob_tracking.track`` after the pool (``add_to_each_streamline(-0.5)``, ``transform_streamlines``
  with the flipped affine, ``smooth_streamlines(smoothing_factor=5)``, ``compress_streamlines(0.1)``)
                                                                        -> :func:`to_world`
* ``dipy.tracking.metrics.spline`` (``splprep(s=5, k=2, nest=-1)``, 400 points) -> :func:`_spline`

Every file is checked before any tracking: present, readable, 3D (TOM: 4D with 3 channels), all on the bundle
mask's grid (shape and affine, as upstream uses the bundle mask's affine for all of them).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.interpolate import splev, splprep
from scipy.ndimage import binary_dilation

from runtime.errors import InputError
from runtime.io.geometry import flip, mni_flip_axes
from runtime.tracking.walker import TrackingVolumes

SMOOTHING = 5
COMPRESSION_ERROR = 0.1


@dataclass(frozen=True)
class BundleFiles:
    """Upstream's input paths for one bundle under a TractSeg output folder."""

    tom: Path
    bundle: Path
    beginnings: Path
    endings: Path

    @classmethod
    def under(cls, output_dir: Path, bundle: str) -> "BundleFiles":
        return cls(output_dir / "TOM" / f"{bundle}.nii.gz",
                   output_dir / "bundle_segmentations" / f"{bundle}.nii.gz",
                   output_dir / "endings_segmentations" / f"{bundle}_b.nii.gz",
                   output_dir / "endings_segmentations" / f"{bundle}_e.nii.gz")


@dataclass(frozen=True)
class BundleInputs:
    """The arrays as upstream's ``tracking.track`` has them after its MNI flips (not yet dilated)."""

    tom: np.ndarray
    bundle_mask: np.ndarray
    beginnings: np.ndarray
    endings: np.ndarray
    affine: np.ndarray  # the bundle mask's (unflipped) affine
    shape: tuple[int, int, int]
    spacing: float


def load_image(path: Path) -> nib.Nifti1Image:
    if not path.is_file():
        raise InputError(f"{path}: not found")
    try:
        return nib.load(str(path))
    except Exception as error:  # nibabel raises many types for a damaged file
        raise InputError(f"{path}: not a readable NIfTI image ({type(error).__name__})") from None


def _data(image: nib.Nifti1Image, path: Path) -> np.ndarray:
    try:
        return image.get_fdata()
    except Exception as error:
        raise InputError(f"{path}: cannot read the image data ({type(error).__name__})") from None


def check_grid(image: nib.Nifti1Image, path: Path, shape: tuple[int, ...], affine: np.ndarray,
               reference: Path) -> None:
    """One line when ``image`` is not on the reference grid (3D shape and affine)."""
    if tuple(image.shape[:3]) != tuple(shape):
        raise InputError(f"{path}: grid {tuple(image.shape[:3])} differs from {reference}'s {tuple(shape)}")
    if not np.allclose(image.affine, affine, atol=1e-4):
        raise InputError(f"{path}: affine differs from {reference}'s")


def open_bundle(files: BundleFiles) -> dict[str, nib.Nifti1Image]:
    """Load the four headers and check them (cheap: no voxel data read), so a bad input fails before tracking."""
    images = {name: load_image(getattr(files, name)) for name in ("bundle", "beginnings", "endings", "tom")}
    reference = images["bundle"]
    if len(reference.shape) != 3:
        raise InputError(f"{files.bundle}: expected a 3D mask, got shape {reference.shape}")
    for name in ("beginnings", "endings", "tom"):
        path = getattr(files, name)
        check_grid(images[name], path, reference.shape, reference.affine, files.bundle)
    for name in ("beginnings", "endings"):
        if len(images[name].shape) != 3:
            raise InputError(f"{getattr(files, name)}: expected a 3D mask, got shape {images[name].shape}")
    if len(images["tom"].shape) != 4 or images["tom"].shape[3] != 3:
        raise InputError(f"{files.tom}: expected a 4D TOM with 3 channels, got shape {images['tom'].shape}")
    return images


def read_bundle_inputs(files: BundleFiles, images: dict[str, nib.Nifti1Image] | None = None) -> BundleInputs:
    """The four arrays, flipped to MNI orientation with the bundle mask's affine (as upstream)."""
    images = images or open_bundle(files)
    affine = images["bundle"].affine
    axes = mni_flip_axes(affine)
    masks = {name: flip(_data(images[name], getattr(files, name)).astype(np.uint8), axes)
             for name in ("bundle", "beginnings", "endings")}
    tom = flip(np.nan_to_num(_data(images["tom"], files.tom)), axes)  # NaN read as 0 (upstream: NaN lengths)
    return BundleInputs(tom, masks["bundle"], masks["beginnings"], masks["endings"], np.asarray(affine),
                        tuple(images["bundle"].shape[:3]), float(images["bundle"].header.get_zooms()[0]))


def flipped_affine(affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Upstream ``img_utils.flip_affine`` with ``get_flip_axis_to_match_MNI_space``'s axes."""
    flipped = affine.copy()
    zooms = affine.diagonal()
    for axis in mni_flip_axes(affine):
        flipped[axis, axis] *= -1
        flipped[axis, 3] += (shape[axis] - 1) * zooms[axis]
    return flipped


def tracking_volumes(inputs: BundleInputs, dilation: int) -> TrackingVolumes:
    """Peaks rotated to voxel space (upstream ``apply_rotation_to_peaks``: ``peaks @ R`` with R the affine's
    normalised columns) and the masks dilated as upstream dilates them."""
    affine_mni = flipped_affine(inputs.affine, inputs.shape)
    rzs = affine_mni[:3, :3]
    rotation = rzs / np.linalg.norm(rzs, axis=0)
    start = binary_dilation(inputs.beginnings, iterations=dilation + 1).astype(np.uint8)
    end = binary_dilation(inputs.endings, iterations=dilation + 1).astype(np.uint8)
    bundle = inputs.bundle_mask
    if dilation > 0:
        bundle = binary_dilation(bundle, iterations=dilation).astype(np.uint8)
    box = _crop_box(bundle)
    peaks = inputs.tom[box].reshape(-1, 3) @ rotation
    crop = bundle[box].shape
    return TrackingVolumes(np.ascontiguousarray(peaks.reshape(crop + (3,))), np.ascontiguousarray(bundle[box]),
                           np.ascontiguousarray(start[box]), np.ascontiguousarray(end[box]), inputs.spacing,
                           tuple(int(b.start) for b in box), tuple(inputs.shape))


def _crop_box(bundle: np.ndarray) -> tuple[slice, slice, slice]:
    """The bundle mask's bounding box with one voxel of margin (a seed displaced below its voxel reads the voxel
    before); the whole grid when the box would touch the border (there upstream's index wrap-around matters)."""
    nonzero = np.argwhere(bundle)
    if len(nonzero) == 0:
        return (slice(0, bundle.shape[0]), slice(0, bundle.shape[1]), slice(0, bundle.shape[2]))
    low, high = nonzero.min(axis=0) - 1, nonzero.max(axis=0) + 2
    if np.any(low < 1) or np.any(high > np.asarray(bundle.shape) - 1):
        return (slice(0, bundle.shape[0]), slice(0, bundle.shape[1]), slice(0, bundle.shape[2]))
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))


def _spline(points: np.ndarray) -> np.ndarray:
    """dipy.tracking.metrics.spline(points, s=5): a k=2 smoothing spline evaluated at 400 points."""
    tck, _ = splprep([points[:, 0], points[:, 1], points[:, 2]], s=SMOOTHING, k=2, nest=-1)
    return np.ascontiguousarray(np.vstack(splev(np.linspace(0, 1, 400), tck)).T)


def to_world(streamlines: list[np.ndarray], inputs: BundleInputs) -> list[np.ndarray]:
    """Voxel-corner tracking coordinates -> RAS mm, smoothed and compressed as upstream does (dipy's
    ``compress_streamlines``: the ``tracking`` extra)."""
    from runtime.host import require_dipy
    require_dipy()
    from dipy.tracking.streamlinespeed import compress_streamlines

    if not streamlines:
        return []
    affine_mni = flipped_affine(inputs.affine, inputs.shape)
    counts = [len(s) for s in streamlines]
    points = np.concatenate(streamlines) - 0.5
    world = points @ affine_mni[:3, :3].T + affine_mni[:3, 3]
    pieces = np.split(world, np.cumsum(counts)[:-1])
    smoothed = [_spline(piece) for piece in pieces]
    return list(compress_streamlines(smoothed, tol_error=COMPRESSION_ERROR))
