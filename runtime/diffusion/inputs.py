"""Raw diffusion inputs: upstream's default file names, FSL bvals/bvecs reading, and every check made before any
work starts. Each problem is one :class:`InputError` line naming the file and what is wrong.

Mirrors (TractSeg 2.10):

| here | upstream |
|---|---|
| :func:`default_gradient_paths` | ``exp_utils.get_bvals_bvecs_path``: ``<dir>/<name up to the first dot>.bvals/.bvecs`` |
| :func:`default_brain_mask` | ``exp_utils.get_brain_mask_path``: ``<output dir>/nodif_brain_mask.nii.gz``, then the same name beside the input |
| :func:`check_inputs` | nothing: upstream runs MRtrix on whatever it is given (``bin/TractSeg`` only checks peaks inputs) |

Decisions (upstream has none): a volume is a b0 when b <= :data:`B0_THRESHOLD` (MRtrix's default
``BZeroThreshold``, 10 s/mm^2, so both engines see the same b0s); a diffusion-weighted volume's bvec must have unit
length within :data:`UNIT_TOLERANCE` (0.01: bvecs written with 3-4 decimals pass, a scaled or unnormalised set
does not); a b0's bvec may be zero or unit. bvecs may be 3 rows (FSL) or 3 columns (as MRtrix and dipy accept).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from runtime.errors import InputError, one_line

B0_THRESHOLD = 10.0  # s/mm^2: MRtrix 3.0's default BZeroThreshold
UNIT_TOLERANCE = 0.01  # | |bvec| - 1 | allowed for a diffusion-weighted volume
SHELL_TOLERANCE = 80.0  # s/mm^2: b-values within this of a shell's first value belong to it (MRtrix's bvalue_epsilon)
GRID_TOLERANCE_MM = 1e-3  # mask and DWI affines may differ by this much (header float rounding)
PEAK_CHANNELS = 9


@dataclass(frozen=True)
class DiffusionInputs:
    """Checked inputs: the files as given (the MRtrix engine passes them on unchanged) and what was read."""

    dwi: Path
    bvals: Path
    bvecs: Path
    brain_mask: Path | None
    shape: tuple[int, int, int, int]
    affine: np.ndarray
    bval_array: np.ndarray  # (N,)
    bvec_array: np.ndarray  # (N, 3), FSL convention (image axes)

    @property
    def b0s(self) -> np.ndarray:
        return self.bval_array <= B0_THRESHOLD

    def shells(self) -> list[float]:
        """Mean b-value of each diffusion shell, ascending."""
        return [float(np.mean(self.bval_array[s])) for s in shell_masks(self.bval_array)]


def shell_masks(bvals: np.ndarray) -> list[np.ndarray]:
    """One boolean mask per diffusion shell (b > B0_THRESHOLD), ascending by b."""
    masks: list[np.ndarray] = []
    left = bvals > B0_THRESHOLD
    while left.any():
        first = float(np.min(bvals[left]))
        member = left & (np.abs(bvals - first) <= SHELL_TOLERANCE)
        masks.append(member)
        left &= ~member
    return masks


def default_gradient_paths(dwi: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``exp_utils.get_bvals_bvecs_path``: ``Diffusion.nii.gz`` -> ``Diffusion.bvals``, ``Diffusion.bvecs`` beside it
    (the name up to its first dot, so ``sub-01.v2.nii.gz`` -> ``sub-01.bvals``, as upstream)."""
    path = Path(dwi)
    stem = path.name.split(".")[0]
    return path.parent / f"{stem}.bvals", path.parent / f"{stem}.bvecs"


def default_brain_mask(dwi: str | os.PathLike[str], output_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """``exp_utils.get_brain_mask_path`` without a given mask: ``<output_dir>/nodif_brain_mask.nii.gz`` if it
    exists, else ``nodif_brain_mask.nii.gz`` beside the input if it exists, else None."""
    for folder in ((Path(output_dir),) if output_dir is not None else ()) + (Path(dwi).parent,):
        candidate = folder / "nodif_brain_mask.nii.gz"
        if candidate.is_file():
            return candidate
    return None


def _load_header(path: Path, what: str) -> nib.Nifti1Image:
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    try:
        image = nib.load(path)
        image.header.get_data_shape()
    except Exception as error:  # nibabel raises several types for unreadable files
        raise InputError(f"{path}: {what} is not a readable NIfTI image ({one_line(error, 160)})") from None
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{path}: {what} is not a NIfTI image")
    return image


def read_gradient_table(path: Path, what: str) -> np.ndarray:
    """A whitespace-separated numeric text file as a 2D float array (one line in -> one row)."""
    if not path.is_file():
        raise InputError(f"{path}: {what} file not found (give it explicitly or put it beside the DWI)")
    try:
        rows = [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        table = np.array([[float(v) for v in row] for row in rows], dtype=float)
    except (UnicodeDecodeError, ValueError) as error:
        raise InputError(f"{path}: {what} file is not whitespace-separated numbers ({one_line(error, 120)})") from None
    if table.ndim != 2 or table.size == 0:
        raise InputError(f"{path}: {what} file is empty or has rows of different lengths")
    if not np.isfinite(table).all():
        raise InputError(f"{path}: {what} file holds non-finite values")
    return table


def read_bvals(path: Path, n_volumes: int) -> np.ndarray:
    table = read_gradient_table(path, "bvals")
    if 1 not in table.shape:
        raise InputError(f"{path}: bvals must be one row (or one column), got {table.shape[0]}x{table.shape[1]}")
    bvals = table.ravel()
    if bvals.size != n_volumes:
        raise InputError(f"{path}: {bvals.size} bvals for a DWI with {n_volumes} volumes")
    if (bvals < 0).any():
        raise InputError(f"{path}: negative b-value {bvals.min():g}")
    return bvals


def read_bvecs(path: Path, n_volumes: int) -> np.ndarray:
    table = read_gradient_table(path, "bvecs")
    if table.shape[0] == 3 and table.shape[1] == n_volumes:
        return table.T.copy()
    if table.shape[1] == 3 and table.shape[0] == n_volumes:
        return table
    raise InputError(f"{path}: bvecs are {table.shape[0]}x{table.shape[1]}, expected 3x{n_volumes} "
                     f"(3 rows, one column per DWI volume)")


def check_gradients(bvals: np.ndarray, bvecs: np.ndarray, bvals_path: Path, bvecs_path: Path) -> None:
    b0 = bvals <= B0_THRESHOLD
    if not b0.any():
        raise InputError(f"{bvals_path}: no b0 volume (no b-value <= {B0_THRESHOLD:g}); CSD needs one")
    if b0.all():
        raise InputError(f"{bvals_path}: no diffusion-weighted volume (every b-value <= {B0_THRESHOLD:g})")
    norms = np.linalg.norm(bvecs, axis=1)
    bad = np.flatnonzero(~b0 & (np.abs(norms - 1.0) > UNIT_TOLERANCE))
    if bad.size:
        i = int(bad[0])
        raise InputError(f"{bvecs_path}: bvec of volume {i} (b={bvals[i]:g}) has length {norms[i]:.4g}, not 1 "
                         f"(tolerance {UNIT_TOLERANCE:g}; {bad.size} such volumes)")
    bad = np.flatnonzero(b0 & (norms > UNIT_TOLERANCE) & (np.abs(norms - 1.0) > UNIT_TOLERANCE))
    if bad.size:
        i = int(bad[0])
        raise InputError(f"{bvecs_path}: bvec of b0 volume {i} has length {norms[i]:.4g}: expected 0 or 1")


def check_inputs(dwi: str | os.PathLike[str], bvals: str | os.PathLike[str] | None = None,
                 bvecs: str | os.PathLike[str] | None = None,
                 brain_mask: str | os.PathLike[str] | None = None) -> DiffusionInputs:
    """Every check before any work; bvals/bvecs default to upstream's names beside ``dwi``. ``brain_mask`` is
    checked when given (resolve upstream's default with :func:`default_brain_mask` first)."""
    dwi_path = Path(dwi)
    image = _load_header(dwi_path, "DWI")
    shape = tuple(int(s) for s in image.header.get_data_shape())
    default_bvals, default_bvecs = default_gradient_paths(dwi_path)
    bvals_path = Path(bvals) if bvals is not None else default_bvals
    bvecs_path = Path(bvecs) if bvecs is not None else default_bvecs
    if len(shape) == 3 or (len(shape) == 4 and shape[3] == 1):
        raise InputError(f"{dwi_path}: a 3D image {shape[:3]}, not a 4D diffusion series")
    if len(shape) != 4:
        raise InputError(f"{dwi_path}: a {len(shape)}D image, expected a 4D diffusion series")
    if shape[3] == PEAK_CHANNELS and not bvals_path.is_file():
        raise InputError(f"{dwi_path}: 9 volumes and no bvals: this looks like a peaks image (3 peaks x 3); "
                         f"give it without --raw_diffusion_input")
    bval_array = read_bvals(bvals_path, shape[3])
    bvec_array = read_bvecs(bvecs_path, shape[3])
    if shape[3] == PEAK_CHANNELS:
        raise InputError(f"{dwi_path}: 9 volumes: this looks like a peaks image (3 peaks x 3), not a diffusion "
                         f"series; give it without --raw_diffusion_input")
    check_gradients(bval_array, bvec_array, bvals_path, bvecs_path)
    mask_path = Path(brain_mask) if brain_mask is not None else None
    if mask_path is not None:
        check_mask(mask_path, shape[:3], image.affine)
    return DiffusionInputs(dwi_path, bvals_path, bvecs_path, mask_path, shape, image.affine, bval_array, bvec_array)


def check_mask(path: Path, shape: tuple[int, ...], affine: np.ndarray) -> None:
    mask = _load_header(path, "brain mask")
    mask_shape = tuple(int(s) for s in mask.header.get_data_shape())
    if len(mask_shape) == 4 and mask_shape[3] == 1:
        mask_shape = mask_shape[:3]
    if mask_shape != tuple(shape):
        raise InputError(f"{path}: brain mask is {mask_shape}, the DWI grid is {tuple(shape)}")
    if not np.allclose(mask.affine, affine, atol=GRID_TOLERANCE_MM):
        raise InputError(f"{path}: brain mask affine differs from the DWI's (not on the same grid)")
    if not np.asarray(mask.dataobj).any():
        raise InputError(f"{path}: brain mask is empty")
