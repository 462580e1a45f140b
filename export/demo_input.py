"""Synthetic peaks volumes for the demo, tests and benchmarks: NOT anatomy, only the right shape and statistics.

python -m export.demo_input OUT.nii.gz [--shape X Y Z] [--seed N] [--voxel MM]

Smooth random direction fields (three unit-ish peaks per voxel) inside an ellipsoid "brain", zero outside, in
LAS orientation like MRtrix output from FSL-preprocessed HCP data (default 145x174x145 at 1.25 mm, HCP's grid).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

HCP_SHAPE = (145, 174, 145)


def synthetic_peaks(shape: tuple[int, int, int] = HCP_SHAPE, seed: int = 0) -> np.ndarray:
    """(X, Y, Z, 9) float32 peaks: a smooth field inside an ellipsoid, zeros outside."""
    rng = np.random.default_rng(seed)
    coarse = tuple(max(2, s // 8) for s in shape)
    field = rng.normal(0, 1, (*coarse, 9)).astype(np.float32)
    field = np.stack([ndimage.zoom(field[..., c], [s / k for s, k in zip(shape, coarse)], order=1)
                      for c in range(9)], axis=-1)[: shape[0], : shape[1], : shape[2]]
    field /= field.std()
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    radius = sum(((g - (s - 1) / 2) / ((s - 1) / 2 * 0.85)) ** 2 for g, s in zip(grid, shape))
    return (field * (radius < 1)[..., None]).astype(np.float32)


def las_affine(shape: tuple[int, int, int], voxel_mm: float) -> np.ndarray:
    """LAS (x flipped) affine centred on the volume, like FSL/MRtrix peaks."""
    affine = np.diag([-voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = [voxel_mm * (shape[0] - 1) / 2, -voxel_mm * (shape[1] - 1) / 2, -voxel_mm * (shape[2] - 1) / 2]
    return affine


def write_demo_peaks(path: Path, shape: tuple[int, int, int] = HCP_SHAPE, seed: int = 0,
                     voxel_mm: float = 1.25) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(synthetic_peaks(shape, seed), las_affine(shape, voxel_mm)), path)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.demo_input", description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--shape", type=int, nargs=3, default=HCP_SHAPE)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--voxel", type=float, default=1.25, help="voxel size in mm")
    args = p.parse_args(argv)
    print(write_demo_peaks(args.out, tuple(args.shape), args.seed, args.voxel))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
