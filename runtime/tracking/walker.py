"""The probabilistic tracker itself, vectorised: every walker of a batch advances one step per numpy call.

Mirrors (TractSeg 2.10, ``libs/tractseg_prob_tracking.py``):

* ``process_seedpoint.process_one_way``          -> :func:`_walk` (both directions of every seed at once)
* ``process_seedpoint`` (length and end checks)  -> :func:`track_batch`
* ``process_seedpoint.get_at_idx``               -> :func:`_voxel_index` (``int()`` truncation toward zero;
  a negative index wraps around as Python indexing does; ``>= shape`` ends the walk as upstream checks it)
* ``seed_generator``                             -> the ``rng.integers`` draw in :func:`track_batch`
* the ``while fiber_ctr < max_nr_fibers`` loop   -> :func:`track_voxels`

Upstream runs one Python call per seed in a ``multiprocessing.Pool`` (5,000 seeds a batch). Here the 5,000 seeds
of a batch become 10,000 walkers (forward and backward, the backward one's first step negated), all advancing
together: per step one peak lookup, the direction flip against the previous step, the Gaussian displacement
(std 0.15 voxel), and the stop rules in upstream's order (out of the image, out of the bundle mask, next peak
shorter than 0.1, length budget spent). Upstream's constants are kept: step 0.7 voxel, 1,000 steps at most,
length between ``int(50 / spacing)`` and ``int(200 / spacing)`` counted as the sum of the raw peak lengths, seeds
``mask voxel + N(0, 0.15)``, a streamline kept when one end lies in the start mask and the other in the end mask,
seeding stopped at ``nr_fibers`` kept or once more than ``100 * nr_fibers`` seeds were used.

Everything here is in upstream's tracking voxel space (MNI-flipped array, voxel corner at 0) on the full grid; the
arrays may be a crop around the bundle mask (:func:`runtime.tracking.prepare.tracking_volumes`), which changes no
lookup (outside the crop the bundle mask is 0, so a walk stops there as on the full grid); the caller
(:mod:`runtime.tracking.api`, with :mod:`runtime.tracking.prepare`) builds the arrays and moves the result to world
space. Random draws come from one ``numpy.random.Generator`` per bundle, so runs are reproducible; upstream's draws
come from the global ``np.random`` state that every forked pool worker inherits unchanged (workers repeat each
other's sequences), which is not reproduced. A NaN in the TOM is read as 0 (the walk stops there); upstream would
carry on with a NaN length.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STEP_SIZE = 0.7
MAX_STEPS = 1000
MIN_LENGTH_MM = 50
MAX_LENGTH_MM = 200
PEAK_LENGTH_THRESHOLD = 0.1
SEED_DISPLACEMENT_STD = 0.15
NEXT_STEP_DISPLACEMENT_STD = 0.15
SEEDS_PER_BATCH = 5000
MAX_SEEDS_PER_FIBER = 100


@dataclass(frozen=True)
class TrackingVolumes:
    """Upstream's globals ``_PEAKS``, ``_BUNDLE_MASK``, ``_START_MASK``, ``_END_MASK`` (already flipped, rotated
    and dilated), all on one grid."""

    peaks: np.ndarray        # (X, Y, Z, 3) float64, voxel-space directions
    bundle_mask: np.ndarray  # (X, Y, Z) uint8
    start_mask: np.ndarray   # (X, Y, Z) uint8
    end_mask: np.ndarray     # (X, Y, Z) uint8
    spacing: float
    offset: tuple[int, int, int] = (0, 0, 0)       # where these (cropped) arrays start in the full grid
    full_shape: tuple[int, int, int] | None = None  # the full grid (None: not cropped)


@dataclass(frozen=True)
class TrackingResult:
    """Kept streamlines in tracking voxel space and how many seeds it took."""

    streamlines: list[np.ndarray]
    seeds_used: int
    early_stop: bool


def _voxel_index(points: np.ndarray, volumes: TrackingVolumes) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices into the (cropped) arrays of the voxels upstream's ``img[int(x), int(y), int(z)]`` reads on
    the full grid, and which points are outside (``int(p) >= shape`` on an axis, upstream's stop rule; below
    ``-shape``, where upstream would crash; or outside the crop, where the bundle mask is 0 on the full grid)."""
    crop = np.asarray(volumes.bundle_mask.shape, dtype=np.int64)
    full = np.asarray(volumes.full_shape or volumes.bundle_mask.shape, dtype=np.int64)
    ijk = np.trunc(points).astype(np.int64)
    outside = np.any((ijk >= full) | (ijk < -full), axis=1)
    ijk = np.where(ijk < 0, ijk + full, ijk) - np.asarray(volumes.offset, dtype=np.int64)  # Python's wrap
    outside |= np.any((ijk < 0) | (ijk >= crop), axis=1)
    ijk[outside] = 0
    flat = (ijk[:, 0] * crop[1] + ijk[:, 1]) * crop[2] + ijk[:, 2]
    return flat, outside


def _walk(volumes: TrackingVolumes, starts: np.ndarray, reverse: np.ndarray, max_length: int,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Advance all walkers until each stops; returns (walker id, step, point) of every appended point (the start
    point is step 0) and each walker's length (sum of raw peak lengths, as upstream's ``sl_len``)."""
    peaks = volumes.peaks.reshape(-1, 3)
    peak_length = np.linalg.norm(peaks, axis=1)
    bundle = volumes.bundle_mask.reshape(-1)
    n = len(starts)
    ids = np.arange(n)
    position = starts.copy()
    last_dir = np.zeros((n, 3))
    length = np.zeros(n)
    record_ids, record_steps, record_points = [ids], [np.zeros(n, np.int64)], [starts]
    for step in range(MAX_STEPS):
        if len(ids) == 0:
            break
        flat, _ = _voxel_index(position, volumes)
        raw = peaks[flat]
        if step == 0:
            raw = np.where(reverse[ids, None], -raw, raw)
        raw_length = peak_length[flat]
        direction = raw / (raw_length + 1e-20)[:, None] * STEP_SIZE  # finite: the TOM was nan_to_num-ed
        if step > 0:
            against = np.einsum("ij,ij->i", direction, last_dir) < 0
            direction[against] *= -1
        direction = direction + rng.normal(0.0, NEXT_STEP_DISPLACEMENT_STD, (len(ids), 3))
        candidate = position + direction
        flat_next, outside = _voxel_index(candidate, volumes)
        go = ~outside
        go &= bundle[flat_next] != 0
        go &= peak_length[flat_next] >= PEAK_LENGTH_THRESHOLD
        go &= length[ids] < max_length
        ids, position, last_dir = ids[go], candidate[go], direction[go]
        length[ids] += raw_length[go]
        record_ids.append(ids)
        record_steps.append(np.full(len(ids), step + 1, np.int64))
        record_points.append(position)
    return (np.concatenate(record_ids), np.concatenate(record_steps), np.concatenate(record_points), length)


def _gather(walker_ids: np.ndarray, steps: np.ndarray, points: np.ndarray,
            wanted: np.ndarray) -> dict[int, np.ndarray]:
    """The points of each wanted walker, in step order."""
    keep = np.isin(walker_ids, wanted)
    walker_ids, steps, points = walker_ids[keep], steps[keep], points[keep]
    order = np.lexsort((steps, walker_ids))
    walker_ids, points = walker_ids[order], points[order]
    cuts = np.flatnonzero(np.diff(walker_ids)) + 1
    return {int(chunk_ids[0]): chunk for chunk_ids, chunk in
            zip(np.split(walker_ids, cuts), np.split(points, cuts)) if len(chunk_ids)}


def track_batch(volumes: TrackingVolumes, seed_voxels: np.ndarray,
                rng: np.random.Generator) -> list[np.ndarray]:
    """One batch of seeds (upstream: one ``pool.map`` over ``process_seedpoint``); kept streamlines in seed
    order, each ``reversed(backward[1:]) + forward``."""
    n = len(seed_voxels)
    min_length = int(MIN_LENGTH_MM / volumes.spacing)
    max_length = int(MAX_LENGTH_MM / volumes.spacing)
    seeds = seed_voxels + rng.normal(0.0, SEED_DISPLACEMENT_STD, (n, 3))
    starts = np.concatenate([seeds, seeds])
    reverse = np.arange(2 * n) >= n
    walker_ids, steps, points, length = _walk(volumes, starts, reverse, max_length, rng)

    last = np.empty((2 * n, 3))
    last_step = np.full(2 * n, -1)
    np.maximum.at(last_step, walker_ids, steps)
    at_end = steps == last_step[walker_ids]
    last[walker_ids[at_end]] = points[at_end]
    total = length[:n] + length[n:]
    ok_length = (total >= min_length) & (total <= max_length)
    first_point, final_point = last[n:], last[:n]  # backward walker's end starts the streamline
    start_mask, end_mask = volumes.start_mask.reshape(-1), volumes.end_mask.reshape(-1)
    first_flat, _ = _voxel_index(first_point, volumes)
    final_flat, _ = _voxel_index(final_point, volumes)
    ends_ok = (((start_mask[first_flat] == 1) & (end_mask[final_flat] == 1))
               | ((start_mask[final_flat] == 1) & (end_mask[first_flat] == 1)))
    kept = np.flatnonzero(ok_length & ends_ok)
    if len(kept) == 0:
        return []
    walks = _gather(walker_ids, steps, points, np.concatenate([kept, kept + n]))
    return [np.concatenate([walks[k + n][:0:-1], walks[k]]) for k in kept]


def track_voxels(volumes: TrackingVolumes, nr_fibers: int, rng: np.random.Generator) -> TrackingResult:
    """Seed batches until ``nr_fibers`` are kept or more than ``100 * nr_fibers`` seeds were used (upstream's
    rule, checked after each batch of 5,000), then keep the first ``nr_fibers``."""
    mask_coords = (np.argwhere(volumes.bundle_mask == 1) + np.asarray(volumes.offset)).astype(np.float64)
    streamlines: list[np.ndarray] = []
    seeds_used, early_stop = 0, False
    while len(streamlines) < nr_fibers:
        picks = rng.integers(0, len(mask_coords), SEEDS_PER_BATCH)
        streamlines += track_batch(volumes, mask_coords[picks], rng)
        seeds_used += SEEDS_PER_BATCH
        if seeds_used > MAX_SEEDS_PER_FIBER * nr_fibers:
            early_stop = len(streamlines) < nr_fibers
            break
    return TrackingResult(streamlines[:nr_fibers], seeds_used, early_stop)
