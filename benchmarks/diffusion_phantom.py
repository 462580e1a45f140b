"""A simulated diffusion phantom with known fibre directions, written as real NIfTI + FSL bvals/bvecs.

The signal is the multi-tensor model of ``dipy.sims.voxel.multi_tensor`` (cylindrically symmetric tensors,
S = S0 * sum_i f_i exp(-b (l2 + (l1 - l2) (g . d_i)^2)), Rician noise of sigma = S0 / snr), evaluated in closed form
for all voxels at once (tests/test_diffusion.py checks one voxel against dipy.sims itself). Fibre directions and
gradients are chosen in world (scanner, RAS+) coordinates; the bvecs file holds them the way FSL defines bvecs
(image axes, x negated when the affine's determinant is positive), so a phantom with a LAS or permuted affine
tests that an engine turns bvecs into world directions the way MRtrix's ``-fslgrad`` does.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

EVALS = (0.0017, 0.0003, 0.0003)  # mm^2/s: dipy's usual white-matter tensor (FA ~0.80)
S0 = 100.0


@dataclass(frozen=True)
class Phantom:
    dwi: Path
    bvals: Path
    bvecs: Path
    mask: Path
    affine: np.ndarray
    directions: np.ndarray  # (X, Y, Z, 2, 3) world unit vectors; the second is zero in single-fibre voxels
    n_fibres: np.ndarray  # (X, Y, Z) 0 outside the mask, 1 or 2 inside


def gradient_directions(n: int, seed: int) -> np.ndarray:
    """``n`` well-spread unit vectors on a hemisphere (electrostatic repulsion, dipy.core.sphere.disperse_charges
    style, but deterministic numpy so that the phantom does not need dipy)."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    for _ in range(200):
        both = np.concatenate([v, -v])
        diff = v[:, None, :] - both[None, :, :]
        dist = np.linalg.norm(diff, axis=2)
        dist[np.arange(n), np.arange(n)] = np.inf
        force = (diff / dist[..., None] ** 3).sum(axis=1)
        force -= (force * v).sum(axis=1, keepdims=True) * v
        v = v + 0.05 * force / np.max(np.linalg.norm(force, axis=1))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
    v[v[:, 2] < 0] *= -1
    return v


def world_to_fsl(gradients_world: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Inverse of MRtrix's ``-fslgrad`` reading: world = R @ (bvec with x negated when det(affine) > 0), R the
    rotation of the affine's linear part (polar decomposition)."""
    u, _, vt = np.linalg.svd(affine[:3, :3])
    rotation = u @ vt
    fsl = gradients_world @ rotation  # R^T g for each row
    if np.linalg.det(affine[:3, :3]) > 0:
        fsl[:, 0] *= -1
    return fsl


def random_unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def signal(gradients: np.ndarray, bvals: np.ndarray, directions: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Noise-free multi-tensor signal: (V, K, 3) directions and (V, K) fractions -> (V, N)."""
    l1, l2, _ = EVALS
    cos2 = np.einsum("nc,vkc->vkn", gradients, directions) ** 2
    per_fibre = np.exp(-bvals[None, None, :] * (l2 + (l1 - l2) * cos2))
    return S0 * np.einsum("vk,vkn->vn", fractions, per_fibre)


def acquisition(rng: np.random.Generator, seed: int, shells: tuple[float, ...], n_dirs: int,
                n_b0: int) -> tuple[np.ndarray, np.ndarray]:
    """(bvals, world gradients) of ``n_b0`` b0s and ``n_dirs`` directions per shell (shell i's directions from
    seed + 1 + i), shuffled by ``rng`` with a b0 first, as scanners interleave the b0s through the series."""
    bvals = np.concatenate([np.zeros(n_b0), *[np.full(n_dirs, b) for b in shells]])
    gradients = np.concatenate([np.zeros((n_b0, 3)),
                                *[gradient_directions(n_dirs, seed + 1 + i) for i in range(len(shells))]])
    order = rng.permutation(len(bvals))
    order = np.concatenate([[0], order[order != 0]]) if n_b0 else order
    return bvals[order], gradients[order]


def simulate(folder: Path, *, shape: tuple[int, int, int] = (12, 12, 6), n_dirs: int = 32, n_b0: int = 3,
             bval: float = 1000.0, affine: np.ndarray | None = None, snr: float | None = 30.0, seed: int = 0,
             crossing_fraction: float = 0.3, crossing_angle: tuple[float, float] = (60.0, 90.0),
             fixed_direction: tuple[float, float, float] | None = None, margin: tuple[int, int, int] = (1, 1, 1),
             ellipsoid: bool = False,
             name: str = "Diffusion") -> Phantom:
    """Write ``<name>.nii.gz``, ``<name>.bvals``, ``<name>.bvecs`` (upstream's default names) and
    ``nodif_brain_mask.nii.gz`` into ``folder``. The mask is the box less ``margin`` voxels on each side (or the
    ellipsoid inscribed in it); outside it the signal is noise only. ``fixed_direction`` (world): every voxel holds
    one fibre along it (the axis/sign test)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    affine = np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else np.asarray(affine, dtype=float)
    bvals, gradients = acquisition(rng, seed, (bval,), n_dirs, n_b0)

    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(m, s - m) for m, s in zip(margin, shape))] = True
    if ellipsoid:  # the ellipsoid inscribed in that box: a brain-like outline for mask-making tests
        centre = (np.array(shape) - 1) / 2
        radii = (np.array(shape) - 2 * np.array(margin)) / 2
        grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1)
        mask &= (((grid - centre) / radii) ** 2).sum(-1) <= 1.0
    n_vox = int(mask.sum())
    directions = np.zeros((n_vox, 2, 3))
    fractions = np.zeros((n_vox, 2))
    if fixed_direction is not None:
        d = np.asarray(fixed_direction, dtype=float)
        directions[:, 0] = d / np.linalg.norm(d)
        fractions[:, 0] = 1.0
        crossing = np.zeros(n_vox, dtype=bool)
    else:
        directions[:, 0] = random_unit(rng, n_vox)
        crossing = rng.random(n_vox) < crossing_fraction
        # second fibre at an angle in crossing_angle from the first: rotate about a random perpendicular axis
        angle = np.deg2rad(rng.uniform(*crossing_angle, size=n_vox))
        perp = np.cross(directions[:, 0], random_unit(rng, n_vox))
        perp /= np.linalg.norm(perp, axis=1, keepdims=True)
        second = np.cos(angle)[:, None] * directions[:, 0] + np.sin(angle)[:, None] * perp
        directions[crossing, 1] = second[crossing]
        fractions[:, 0] = np.where(crossing, 0.5, 1.0)
        fractions[:, 1] = np.where(crossing, 0.5, 0.0)
    clean = signal(gradients, bvals, directions, fractions)

    data = np.zeros((*shape, len(bvals)))
    data[mask] = clean
    if snr is not None:
        sigma = S0 / snr
        data = np.sqrt((data + rng.normal(scale=sigma, size=data.shape)) ** 2
                       + rng.normal(scale=sigma, size=data.shape) ** 2)
    truth = np.zeros((*shape, 2, 3))
    truth[mask] = directions
    n_fibres = np.zeros(shape, dtype=np.int8)
    n_fibres[mask] = np.where(crossing, 2, 1)

    paths = Phantom(folder / f"{name}.nii.gz", folder / f"{name}.bvals", folder / f"{name}.bvecs",
                    folder / "nodif_brain_mask.nii.gz", affine, truth, n_fibres)
    nib.Nifti1Image(data.astype(np.float32), affine).to_filename(paths.dwi)
    nib.Nifti1Image(mask.astype(np.uint8), affine).to_filename(paths.mask)
    np.savetxt(paths.bvals, bvals[None, :], fmt="%g")
    np.savetxt(paths.bvecs, world_to_fsl(gradients, affine).T, fmt="%.8f")
    return paths
