"""A fibre-coherence score of a direction field under each single-axis sign flip.

Idea (the fibre coherence index of Schilling et al., MRM 2019): in a correctly oriented image a voxel's main
fibre direction points at neighbouring voxels whose main directions are parallel to it; read with one axis's sign
wrong, the direction points at the mirrored neighbour instead, which on a curved, oblique fibre field lies on
another path. For undirected fibres two flips equal the third (``F_x F_y = -F_z``), so "none", "x", "y", "z" are
every sign reading.

The score of a reading ``F`` (vectorised numpy, nearest-neighbour steps):

1. Selected voxels: a clear main direction. Peaks: first peak at least :data:`STRONG_FRACTION` of the 99th
   percentile of first-peak amplitudes, and second peak at most :data:`SINGLE_RATIO` of the first (crossings
   point at neighbours of two populations and only dilute the score). A DTI field: FA >= ``FA_MIN``
   (:mod:`runtime.orientation.dwi`).
2. For each selected voxel i with unit world direction d_i, step ``t`` mm along ``F d_i`` and round to a voxel:
   the offset ``rint(M^-1 F d_i t)`` (M the affine's 3x3, so anisotropic and oblique grids are handled), for
   ``t`` = :data:`STEPS` x max(:data:`STEP_MM`, largest voxel size) and both signs; an offset of 0 is skipped.
3. The neighbour's main direction d_j (any nonzero voxel; outside the grid or the brain the sample is dropped):
   the sample's value is ``|d_i . d_j|``. The reading's score is the mean over all samples.

``F`` only changes which neighbour is looked at (``|F d_i . F d_j| = |d_i . d_j|``), so every reading is scored on
the same voxels and the same field. The margin is the best score minus the runner-up's; its standard error comes
from a delete-one-block jackknife over cubes of :data:`BLOCK_MM` (neighbouring voxels are not independent).

Calibration of ``confident`` (``python -m benchmarks.orientation``; benchmarks/results/orientation-*.json;
Intel Xeon, 2 vCPU, 2026-12). Whole brains:

* the real example peaks (73x87x73, 2.5 mm, LAS; 21,666 voxels scored): "none" wins by 0.062, 15.8 SE; each
  single-axis flip of them is named with the same margin (a flip permutes the four scores);
* the same peaks stored RAS or LPI (nibabel ``as_reoriented``, world directions kept): the same scores; grid and
  directions rotated 10 degrees (oblique): 0.063; upsampled x2 to 145x174x145: 0.055, 16 SE;
* a DTI fit of DWIs simulated from the peaks (30 directions at b=1000 + 3 b0, SNR 30, stored LAS and RAS):
  0.068, 13 SE, and a negated bvecs row is named; peaks made by the repository's dipy engine (sh2peaks-style) from
  DWIs simulated from a 40^3 crop, stored LAS or RAS: 0.052, 11-12 SE; synthetic curved tracts: 0.148, 9.8 SE.

Small or empty fields: 24^3 crops of the real peaks (2,000-4,500 voxels): "none" best in all four, margins
0.030-0.073 at 3.3-10.9 SE (two confident); random or shuffled directions: margins <= 0.0008, <= 1.1 SE.

So a verdict is ``confident`` when the margin is at least :data:`MIN_MARGIN` (0.01: 12x the largest noise margin,
a fifth of the smallest margin on a brain or a large crop) AND at least :data:`MIN_Z` (5; noise stayed below 1.1, whole brains
above 12) standard errors, on at least :data:`MIN_VOXELS` voxels. Anything else is "no confident verdict".
"""
from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from runtime.orientation.flips import WORLD_FLIPS
from runtime.orientation.result import OrientationResult

STRONG_FRACTION = 0.3  # first peak >= this x the 99th percentile of first-peak amplitudes
SINGLE_RATIO = 0.6  # second peak <= this x the first: one clear fibre population
STEP_MM = 2.5  # neighbour distances: STEPS x max(STEP_MM, largest voxel size) in mm, both directions along F d
STEPS = (1, 2, 3)  # (one voxel alone resolves angles too coarsely; 1.25 mm steps on HCP halve the margin)
BLOCK_MM = 25.0  # jackknife block edge
MIN_MARGIN = 0.01
MIN_Z = 5.0
MIN_VOXELS = 200


def unit_main_directions(peaks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unit first-peak directions (X, Y, Z, 3) float32, first amplitude, second amplitude) of ``(X, Y, Z, 3K)``
    peaks (NaN must already be 0)."""
    first = np.asarray(peaks[..., 0:3], dtype=np.float32)
    amplitude = np.sqrt(np.einsum("...c,...c->...", first, first))
    unit = first / np.where(amplitude > 0, amplitude, 1.0)[..., None]
    if peaks.shape[3] >= 6:
        second = peaks[..., 3:6].astype(np.float32)
        second_amplitude = np.sqrt(np.einsum("...c,...c->...", second, second))
    else:
        second_amplitude = np.zeros_like(amplitude)
    return unit, amplitude, second_amplitude


def peak_selection(amplitude: np.ndarray, second_amplitude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(selected voxels, valid neighbours) of a peaks field by the rules in the module docstring."""
    valid = amplitude > 0
    if not valid.any():
        return valid, valid
    reference = float(np.percentile(amplitude[valid], 99.0))
    selected = (amplitude >= STRONG_FRACTION * reference) & (second_amplitude <= SINGLE_RATIO * amplitude) & valid
    return selected, valid


def _blocks(index: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, int]:
    if len(index) == 0:
        return np.zeros(0, dtype=np.int64), 0
    sizes = np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)
    edge = np.maximum(1, np.rint(BLOCK_MM / sizes)).astype(np.int64)
    block = index // edge
    key = np.ravel_multi_index(tuple(block.T), tuple(block.max(axis=0) + 1))
    _, inverse = np.unique(key, return_inverse=True)
    return inverse.ravel(), int(inverse.max()) + 1


def coherence_scores(directions: np.ndarray, selected: np.ndarray, valid: np.ndarray, affine: np.ndarray,
                     flips: Mapping[str, np.ndarray] = WORLD_FLIPS
                     ) -> tuple[dict[str, float], dict[str, np.ndarray], dict[str, np.ndarray], int]:
    """Score each reading in ``flips`` (name -> 3x3 world reflection applied to the step direction).

    ``directions``: unit world vectors (X, Y, Z, 3); ``selected``: voxels scored; ``valid``: voxels a step may land
    on. Returns (scores, per-block sums of |cos|, per-block sample counts, voxels scored): the per-block values feed
    the jackknife in :func:`verdict`.
    """
    linear_map = np.asarray(affine, dtype=float)[:3, :3]
    index = np.argwhere(selected)
    own = directions[selected].astype(np.float32)
    blocks, n_blocks = _blocks(index, affine)
    voxel_mm = float(np.max(np.linalg.norm(linear_map, axis=0)))
    step_mm = [max(STEP_MM, voxel_mm) * k for k in STEPS]
    offsets = {}  # (flip, distance) -> integer voxel offsets (N, 3)
    for name, matrix in flips.items():
        step = own.astype(np.float64) @ (np.linalg.inv(linear_map) @ np.asarray(matrix, dtype=float)).T
        for distance in step_mm:
            offsets[name, distance] = np.rint(distance * step).astype(np.int64)
    # pad the field by the longest step so that every target is a plain index into one flat array (padding: invalid)
    pad = int(max((int(np.abs(o).max()) for o in offsets.values() if o.size), default=0))
    padded_valid = np.pad(valid, pad)
    padded = np.zeros((*padded_valid.shape, 3), dtype=np.float32)
    padded[pad:pad + valid.shape[0], pad:pad + valid.shape[1], pad:pad + valid.shape[2]] = directions
    flat, flat_valid = padded.reshape(-1, 3), padded_valid.ravel()
    strides = np.array([padded_valid.shape[1] * padded_valid.shape[2], padded_valid.shape[2], 1], dtype=np.int64)
    base = (index + pad) @ strides
    scores: dict[str, float] = {}
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for name in flips:
        total = np.zeros(len(index), dtype=np.float32)
        count = np.zeros(len(index), dtype=np.int32)
        for distance in step_mm:
            offset = offsets[name, distance]
            moved = np.any(offset != 0, axis=1)
            shift = offset @ strides
            for sign in (1, -1):
                target = base + sign * shift
                ok = moved & flat_valid[target]
                cosine = np.abs(np.einsum("nc,nc->n", own, flat[target]))
                cosine[~ok] = 0.0
                total += cosine
                count += ok
        sums[name] = np.bincount(blocks, total, n_blocks)
        counts[name] = np.bincount(blocks, count, n_blocks)
        n = int(count.sum())
        scores[name] = float(total.sum(dtype=np.float64) / n) if n else 0.0
    return scores, sums, counts, len(index)


def _jackknife_se(sums: dict[str, np.ndarray], counts: dict[str, np.ndarray], a: str, b: str) -> float:
    """Standard error of score[a] - score[b] by deleting one block at a time."""
    n_blocks = len(sums[a])
    if n_blocks < 2:
        return float("inf")
    with np.errstate(invalid="ignore", divide="ignore"):
        left_a = (sums[a].sum() - sums[a]) / (counts[a].sum() - counts[a])
        left_b = (sums[b].sum() - sums[b]) / (counts[b].sum() - counts[b])
    difference = left_a - left_b
    difference = difference[np.isfinite(difference)]
    if difference.size < 2:
        return float("inf")
    return float(np.sqrt((difference.size - 1) / difference.size * ((difference - difference.mean()) ** 2).sum()))


def verdict(directions: np.ndarray, selected: np.ndarray, valid: np.ndarray, affine: np.ndarray,
            flips: Mapping[str, np.ndarray] = WORLD_FLIPS, frame: str = "world",
            started: float | None = None) -> OrientationResult:
    """Scores, margin, standard error and the calibrated ``confident`` flag for one direction field."""
    started = time.perf_counter() if started is None else started
    scores, sums, counts, voxels = coherence_scores(directions, selected, valid, affine, flips)
    ranked = sorted(scores, key=lambda name: scores[name], reverse=True)
    best, runner_up = ranked[0], ranked[1]
    margin = scores[best] - scores[runner_up]
    se = _jackknife_se(sums, counts, best, runner_up)
    z = margin / se if se > 0 else (float("inf") if margin > 0 else 0.0)
    notes: list[str] = []
    if voxels < MIN_VOXELS:
        notes.append(f"only {voxels} voxels with a clear main direction (need {MIN_VOXELS})")
    confident = bool(voxels >= MIN_VOXELS and margin >= MIN_MARGIN and z >= MIN_Z)
    return OrientationResult(flip=best, scores=scores, margin=float(margin), confident=confident,
                             z=float(min(z, 1e6)), voxels=int(voxels), frame=frame,
                             seconds=time.perf_counter() - started, notes=tuple(notes))


def check_peaks(data: np.ndarray, affine: np.ndarray) -> OrientationResult:
    """The orientation check of a peaks image ``(X, Y, Z, 3K)`` (world directions, NaN already 0, e.g. from
    :func:`runtime.io.nifti_io.load_peaks`) on the grid ``affine``: is the field most coherent as given, or with
    one world axis's sign flipped?"""
    started = time.perf_counter()
    if data.ndim != 4 or data.shape[3] < 3 or data.shape[3] % 3:
        raise ValueError(f"expected peaks of shape (X, Y, Z, 3K), got {data.shape}")
    directions, amplitude, second = unit_main_directions(data)
    selected, valid = peak_selection(amplitude, second)
    return verdict(directions, selected, valid, affine, WORLD_FLIPS, "world", started)
