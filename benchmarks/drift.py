"""How far an output is from the reference: probabilities on the check batches, final masks on a full subject."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from benchmarks import MASK_THRESHOLD


def probability_drift(outputs: dict[int, np.ndarray], reference: dict[int, np.ndarray]) -> dict[str, Any]:
    """Max / mean abs difference and the fraction of (slice, bundle, pixel) whose prob > 0.5 mask differs,
    over the check batches both have seen."""
    from export.verify import drift_figures

    common = sorted(set(outputs) & set(reference))
    figures = drift_figures((outputs[i], reference[i]) for i in common)
    flipped = sum(int(np.count_nonzero((np.asarray(outputs[i]) > MASK_THRESHOLD) != (reference[i] > MASK_THRESHOLD)))
                  for i in common)
    count = figures["values"]
    return {"max_abs": figures["max_abs"], "mean_abs": figures["mean_abs"],
            "mask_diff_fraction": flipped / count if count else None, "batches": common,
            "slices": sum(int(np.asarray(outputs[i]).shape[0]) for i in common)}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """2|A & B| / (|A| + |B|); 1.0 when both masks are empty."""
    both = int(np.count_nonzero(a & b))
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if total == 0 else 2.0 * both / total


def load_masks(directory: Path, bundles: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Per-bundle masks as written by the runtime / upstream CLI: <dir>/bundle_segmentations/<bundle>.nii.gz."""
    return {b: np.asarray(nib.load(directory / "bundle_segmentations" / f"{b}.nii.gz").dataobj) != 0
            for b in bundles}


def mask_agreement(masks: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per-bundle Dice against the reference masks, and the fraction of voxels (all bundles) that differ."""
    per_bundle = {b: round(dice(masks[b], reference[b]), 6) for b in reference}
    differing = sum(int(np.count_nonzero(masks[b] != reference[b])) for b in reference)
    voxels = sum(m.size for m in reference.values())
    worst = min(per_bundle, key=per_bundle.get)
    return {"dice": per_bundle, "dice_min": per_bundle[worst], "dice_min_bundle": worst,
            "dice_mean": round(float(np.mean(list(per_bundle.values()))), 6),
            "bundles_not_identical": sum(1 for b in reference if not np.array_equal(masks[b], reference[b])),
            "voxel_diff_fraction": differing / voxels,
            "reference_voxels": int(sum(int(np.count_nonzero(m)) for m in reference.values()))}


def gate(rows: list[dict[str, Any]], tolerance: float) -> list[str]:
    """The CI rule: every fp32 artifact row within `tolerance` max abs probability of the live model."""
    failures = []
    for row in rows:
        if row["kind"] != "artifact" or row["precision"] != "fp32":
            continue
        if row.get("skipped"):
            if row["skipped"].startswith("failed"):  # installed and runnable here, but broken
                failures.append(f"{row['id']}: {row['skipped']}")
            continue
        drift = row.get("drift") or {}
        value = drift.get("max_abs")
        if value is None or not value <= tolerance:
            failures.append(f"{row['id']}: max abs probability difference {value} > {tolerance:g}")
    return failures
