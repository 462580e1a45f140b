"""python -m benchmarks tracking: runtime.tracking / runtime.tractometry against upstream's Tracking / Tractometry
on the same synthetic curved bundles, same machine, same run; also the phantom and the upstream runner that
tests/test_tracking.py and tests/test_tractometry.py use (one place for both).

The phantom: a half-ring tube (radius ``ring`` voxels, tube radius ``tube``) in the x-z plane, its TOM the unit
tangent in world space, beginnings / endings the tube's first / last ``end_degrees`` of arc, written as real NIfTI
files in upstream's layout (``TOM/``, ``bundle_segmentations/``, ``endings_segmentations/``) plus ``peaks.nii.gz``
and an ``FA.nii.gz`` that varies along and across the bundle. The affine has a positive x axis, so upstream's MNI
flip of x (and its flipped affine) is exercised.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np


@dataclass(frozen=True)
class Phantom:
    shape: tuple[int, int, int] = (48, 20, 36)
    spacing: float = 2.0
    ring: float = 14.0
    tube: float = 3.0
    end_degrees: float = 14.0

    @property
    def affine(self) -> np.ndarray:
        a = np.diag([self.spacing, self.spacing, self.spacing, 1.0])
        a[:3, 3] = [-40.0, -20.0, -10.0]
        return a


def write_phantom(root: Path, bundles: list[str], phantom: Phantom = Phantom(), empty: tuple[str, ...] = ()) -> Path:
    """Write the phantom for each bundle (same geometry) under ``root/tractseg_output``; returns that folder.
    Bundles in ``empty`` get an all-zero bundle mask (upstream's empty-tractogram case)."""
    out = root / "tractseg_output"
    for sub in ("TOM", "bundle_segmentations", "endings_segmentations"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    x, y, z = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in phantom.shape], indexing="ij")
    cx, cy, cz = phantom.shape[0] / 2, phantom.shape[1] / 2, 6.0
    radial = np.hypot(x - cx, z - cz)
    angle = np.degrees(np.arctan2(z - cz, x - cx))
    inside = (np.hypot(radial - phantom.ring, y - cy) <= phantom.tube) & (z >= cz)
    tangent = np.stack([-(z - cz), np.zeros_like(x), x - cx], axis=-1) / np.maximum(radial, 1e-6)[..., None]
    tom = np.where(inside[..., None], tangent, 0).astype(np.float32)
    beginnings = inside & (angle <= phantom.end_degrees)
    endings = inside & (angle >= 180 - phantom.end_degrees)
    fa = (0.3 + 0.4 * inside * (1 + np.cos(np.radians(angle))) / 2 + 0.05 * np.sin(y)).astype(np.float32)
    affine = phantom.affine
    for bundle in bundles:
        mask = inside if bundle not in empty else np.zeros_like(inside)
        nib.save(nib.Nifti1Image(tom, affine), str(out / "TOM" / f"{bundle}.nii.gz"))
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), str(out / "bundle_segmentations" / f"{bundle}.nii.gz"))
        nib.save(nib.Nifti1Image(beginnings.astype(np.uint8), affine),
                 str(out / "endings_segmentations" / f"{bundle}_b.nii.gz"))
        nib.save(nib.Nifti1Image(endings.astype(np.uint8), affine),
                 str(out / "endings_segmentations" / f"{bundle}_e.nii.gz"))
    peaks = np.concatenate([tom, np.zeros(phantom.shape + (6,), np.float32)], axis=-1)
    nib.save(nib.Nifti1Image(peaks, affine), str(root / "peaks.nii.gz"))
    nib.save(nib.Nifti1Image(fa, affine), str(root / "FA.nii.gz"))
    return out
