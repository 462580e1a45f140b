"""How far two segmentation runs (and their peaks) agree: per-bundle Dice of the masks, first-peak angles against
the simulated truth and between engines, and whether two peaks files are identical. Used by
``python -m benchmarks diffusion-dice`` (benchmarks/diffusion_dice.py)."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from benchmarks.diffusion import angle_deg, unit_peak


def read_masks(run_dir: Path) -> dict[str, np.ndarray]:
    """Bundle name -> bool mask, from ``<run_dir>/bundle_segmentations/<bundle>.nii.gz`` (ours and upstream's)."""
    folder = run_dir / "bundle_segmentations"
    return {p.name[:-len(".nii.gz")]: np.asarray(nib.load(p).dataobj) > 0
            for p in sorted(folder.glob("*.nii.gz"))}


def dice(a: np.ndarray, b: np.ndarray) -> float | None:
    """2|A and B| / (|A| + |B|); None when both are empty (no overlap to measure)."""
    total = int(a.sum()) + int(b.sum())
    return None if total == 0 else 2.0 * int((a & b).sum()) / total


def dice_table(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, object]:
    """Per-bundle Dice of two runs' masks: mean / median / min over the bundles non-empty in at least one run, how
    many are empty in both (left out) and in exactly one (Dice 0), the five lowest."""
    if a.keys() != b.keys():
        raise ValueError(f"the runs hold different bundles: {sorted(a.keys() ^ b.keys())[:5]}")
    per = {name: dice(a[name], b[name]) for name in a}
    measured = {k: v for k, v in per.items() if v is not None}
    values = np.array(list(measured.values()))
    worst = sorted(measured.items(), key=lambda kv: kv[1])[:5]
    return {"bundles": len(per), "compared": len(measured), "empty_in_both": len(per) - len(measured),
            "empty_in_one": sum(1 for k in measured if not (a[k].any() and b[k].any())),
            "mean": _round(values.mean()) if values.size else None,
            "median": _round(np.median(values)) if values.size else None,
            "min": _round(values.min()) if values.size else None,
            "lowest": [[k, _round(v)] for k, v in worst],
            "voxels_mean": _round(np.mean([(a[k].sum() + b[k].sum()) / 2 for k in measured])) if measured else 0,
            "per_bundle": {k: (None if v is None else _round(v)) for k, v in per.items()}}


def _round(x: float) -> float:
    return round(float(x), 4)


def angle_stats(angles: np.ndarray) -> dict[str, float | int | None]:
    if angles.size == 0:
        return {"median": None, "p95": None, "n": 0}
    return {"median": _round(np.median(angles)), "p95": _round(np.percentile(angles, 95)), "n": int(angles.size)}


def peak_agreement(peaks: dict[str, np.ndarray], truth_directions: np.ndarray, single: np.ndarray,
                   regions: dict[str, np.ndarray]) -> dict[str, object]:
    """First-peak angles (lines, sign ignored) in single-fibre voxels, within each region (name -> bool mask):
    each engine against the truth's one fibre, and each pair of engines; plus the median amplitude ratio."""
    units = {name: unit_peak(p) for name, p in peaks.items()}
    result: dict[str, object] = {}
    for region, where in regions.items():
        voxels = single & where
        row: dict[str, object] = {"voxels": int(voxels.sum())}
        for name, (direction, _) in units.items():
            row[f"{name}_vs_truth"] = angle_stats(angle_deg(direction, truth_directions)[voxels])
        names = list(units)
        for i, first in enumerate(names):
            for second in names[i + 1:]:
                (d1, a1), (d2, a2) = units[first], units[second]
                row[f"{first}_vs_{second}"] = angle_stats(angle_deg(d1, d2)[voxels])
                ok = voxels & (a1 > 0)
                row[f"amplitude_ratio_{second}_over_{first}"] = _round(np.median(a2[ok] / a1[ok])) if ok.any() \
                    else None
        result[region] = row
    return result


def same_peaks(a: Path, b: Path) -> dict[str, object]:
    """Whether two peaks files hold the same values (NaN equal to NaN), and how many voxels differ."""
    x = np.asarray(nib.load(a).dataobj)
    y = np.asarray(nib.load(b).dataobj)
    if x.shape != y.shape:
        return {"identical": False, "why": f"shapes {x.shape} and {y.shape}"}
    differ = ~((x == y) | (np.isnan(x) & np.isnan(y)))
    voxels = differ.reshape(*x.shape[:3], -1).any(-1)
    finite = np.nan_to_num(np.abs(x - y))
    return {"identical": not differ.any(), "voxels_differing": int(voxels.sum()),
            "max_abs_difference": float(finite.max()) if finite.size else 0.0}
