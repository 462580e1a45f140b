"""An HCP-like DWI simulated from a real brain's fibre peaks, written as real NIfTI + FSL bvals/bvecs.

The fibre directions and volume fractions come from a 9-channel peaks image (MRtrix ``sh2peaks``: 3 peaks per
voxel, world directions, length ~ the FOD amplitude), e.g. the shared 2.5 mm example subject. Per voxel of the
brain mask (the peaks' nonzero voxels):

- fibres: the peaks whose length is at least ``KEEP_RELATIVE`` (0.5) of the voxel's first peak, along the peak's
  direction (the smaller lobes of a CSD are mostly noise: in the example subject 65% of voxels have 3 non-zero
  peaks, the second at a median 0.78 of the first);
- fibre volume fractions ``f_k = L_k / L_ref`` (``L_ref``: the 99th percentile over the mask of the sum of the
  kept lengths), scaled to sum 1 where they exceed it: peak length ~ fraction, as the brief for this benchmark
  states; strong white matter is nearly all fibre, grey matter mostly isotropic;
- the rest ``1 - sum f_k`` is isotropic: grey-matter-like (D = 0.8 um^2/ms) inside, CSF-like (D = 3.0 um^2/ms)
  in the mask's outer ``CSF_BORDER`` voxels (the sulcal CSF at the brain's surface; the peaks alone do not show
  the ventricles), so that MRtrix's ``dwi2response dhollander`` finds three tissues on a multi-shell series;
- each fibre is dipy's multi-tensor model (:func:`benchmarks.diffusion_phantom.signal`, eigenvalues
  1.7/0.3/0.3 um^2/ms), S0 100 everywhere, then Rician noise of sigma = S0 / snr in every voxel of the grid.

The truth written beside the DWI is ``truth_peaks.nii.gz``: the kept peaks as in the input (the segmentation's
reference input). ``upsample`` repeats every voxel (nearest neighbour) to make a larger grid: 2 turns the 2.5 mm
73x87x73 grid into 146x174x146 at 1.25 mm, the size of an HCP subject (145x174x145).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from benchmarks.diffusion_phantom import S0, acquisition, signal, world_to_fsl

KEEP_RELATIVE = 0.5
REFERENCE_PERCENTILE = 99.0
D_GREY = 0.0008  # mm^2/s
D_CSF = 0.0030
CSF_BORDER = 2
CHUNK = 20000


@dataclass(frozen=True)
class BrainPhantom:
    dwi: Path
    bvals: Path
    bvecs: Path
    mask: Path
    truth_peaks: Path
    affine: np.ndarray
    directions: np.ndarray  # (X, Y, Z, 3, 3) world unit vectors of the simulated fibres (zero rows when absent)
    fractions: np.ndarray  # (X, Y, Z, 3) fibre volume fractions
    n_fibres: np.ndarray  # (X, Y, Z) 0 outside the mask, else 1..3
    csf: np.ndarray  # (X, Y, Z) bool: the isotropic part is CSF-like here

    def summary(self) -> dict[str, object]:
        inside = self.n_fibres > 0
        return {"shape": list(self.n_fibres.shape), "voxel_mm": round(float(abs(self.affine[0, 0])), 4),
                "mask_voxels": int(inside.sum()),
                "voxels_by_fibre_count": {str(k): int((self.n_fibres == k).sum()) for k in (1, 2, 3)},
                "csf_border_voxels": int(self.csf.sum()),
                "fibre_fraction_median": round(float(np.median(self.fractions.sum(-1)[inside])), 4)}


def read_peaks(path: Path, upsample: int = 1,
               crop: tuple[slice, slice, slice] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(peaks (X, Y, Z, 9) float32 without NaN, affine), cropped then repeated ``upsample`` times per axis."""
    image = nib.load(path)
    peaks = np.nan_to_num(np.asarray(image.get_fdata(dtype=np.float32)))
    affine = image.affine.copy()
    if crop is not None:
        peaks = peaks[crop]
        affine[:3, 3] = affine[:3, :3] @ np.array([s.start or 0 for s in crop], dtype=float) + affine[:3, 3]
    if upsample > 1:
        for axis in range(3):
            peaks = np.repeat(peaks, upsample, axis=axis)
        # new voxel i covers old voxel i // f; its centre is old coordinate (i + 0.5) / f - 0.5
        scale = np.diag([1.0 / upsample] * 3 + [1.0])
        scale[:3, 3] = (1.0 / upsample - 1.0) / 2
        affine = affine @ scale
    return peaks, affine


def fibres_from_peaks(peaks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(directions (..., 3, 3), fractions (..., 3), kept (..., 3) bool) by the rules in the module docstring."""
    vectors = peaks.reshape(*peaks.shape[:3], 3, 3).astype(np.float64)
    lengths = np.linalg.norm(vectors, axis=-1)
    kept = (lengths > 0) & (lengths >= KEEP_RELATIVE * lengths[..., :1])
    directions = np.where(kept[..., None], vectors / np.maximum(lengths, 1e-12)[..., None], 0.0)
    kept_lengths = np.where(kept, lengths, 0.0)
    total = kept_lengths.sum(-1)
    inside = total > 0
    reference = np.percentile(total[inside], REFERENCE_PERCENTILE) if inside.any() else 1.0
    fractions = kept_lengths / reference
    over = fractions.sum(-1) > 1.0
    fractions[over] /= fractions[over].sum(-1, keepdims=True)
    return directions, fractions, kept


def simulate_from_peaks(peaks_path: Path, folder: Path, *, shells: tuple[float, ...] = (1000.0,), n_dirs: int = 90,
                        n_b0: int = 18, snr: float | None = 30.0, seed: int = 0, upsample: int = 1,
                        crop: tuple[slice, slice, slice] | None = None, name: str = "Diffusion") -> BrainPhantom:
    """Write ``<name>.nii.gz`` + ``.bvals`` + ``.bvecs`` (upstream's default names), ``nodif_brain_mask.nii.gz``
    and ``truth_peaks.nii.gz`` into ``folder``; ``n_dirs`` directions per shell."""
    from scipy import ndimage

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    peaks, affine = read_peaks(peaks_path, upsample, crop)
    directions, fractions, kept = fibres_from_peaks(peaks)
    mask = kept.any(-1)
    csf = mask & ~ndimage.binary_erosion(mask, iterations=CSF_BORDER)
    bvals, gradients = acquisition(rng, seed, tuple(shells), n_dirs, n_b0)

    data = np.zeros((*mask.shape, len(bvals)), dtype=np.float32)
    index = np.flatnonzero(mask)
    for start in range(0, len(index), CHUNK):
        at = np.unravel_index(index[start:start + CHUNK], mask.shape)
        f = fractions[at]
        isotropic = np.where(csf[at], D_CSF, D_GREY)[:, None]
        clean = signal(gradients, bvals, directions[at], f)
        clean += S0 * (1.0 - f.sum(-1))[:, None] * np.exp(-bvals[None, :] * isotropic)
        data[at] = clean
    if snr is not None:
        sigma = np.float32(S0 / snr)
        for z in range(data.shape[2]):  # a slab at a time: an HCP-size series is 1.6 GB in float32
            plane = data[:, :, z]
            real = plane + sigma * rng.standard_normal(plane.shape, dtype=np.float32)
            imaginary = sigma * rng.standard_normal(plane.shape, dtype=np.float32)
            data[:, :, z] = np.sqrt(real * real + imaginary * imaginary)

    truth = np.where(kept[..., None], peaks.reshape(*peaks.shape[:3], 3, 3), 0.0).reshape(peaks.shape)
    phantom = BrainPhantom(folder / f"{name}.nii.gz", folder / f"{name}.bvals", folder / f"{name}.bvecs",
                           folder / "nodif_brain_mask.nii.gz", folder / "truth_peaks.nii.gz", affine, directions,
                           fractions, kept.sum(-1).astype(np.int8), csf)
    nib.Nifti1Image(data, affine).to_filename(phantom.dwi)
    nib.Nifti1Image(mask.astype(np.uint8), affine).to_filename(phantom.mask)
    nib.Nifti1Image(truth.astype(np.float32), affine).to_filename(phantom.truth_peaks)
    np.savetxt(phantom.bvals, bvals[None, :], fmt="%g")
    np.savetxt(phantom.bvecs, world_to_fsl(gradients, affine).T, fmt="%.8f")
    return phantom


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.diffusion_brain PEAKS OUT_DIR [--upsample 2] [--snr 30]``: a DWI to try
    ``--raw_diffusion_input`` with (OUT_DIR/Diffusion.nii.gz, .bvals, .bvecs, nodif_brain_mask.nii.gz)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m benchmarks.diffusion_brain", description=main.__doc__.split("\n")[0])
    p.add_argument("peaks", type=Path, help="a 9-channel peaks image, e.g. upstream's example peaks")
    p.add_argument("out", type=Path, help="folder for Diffusion.nii.gz, .bvals, .bvecs and the brain mask")
    p.add_argument("--upsample", type=int, default=1, help="2: an HCP-size grid from the 2.5 mm example")
    p.add_argument("--snr", type=float, default=30.0)
    args = p.parse_args(argv)
    simulate_from_peaks(args.peaks, args.out, upsample=args.upsample, snr=args.snr)
    print(f"wrote {args.out / 'Diffusion.nii.gz'} (+ .bvals, .bvecs, nodif_brain_mask.nii.gz)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
