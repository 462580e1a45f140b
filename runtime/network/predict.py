"""The network step: the 2D model over every x, y and z slice of the cube, fused by the mean of probabilities.

Mirrors (TractSeg 2.10) ``direction_merger.get_seg_single_img_3_directions`` + ``mean_fusion``: for each of the
directions x, y, z upstream predicts all S slices (``data_utils.sample_slices``: a slice is ``(9, a, b)`` with the
two remaining cube axes in order), stores the probabilities as ``(S, S, S, C)`` float32, concatenates the three
volumes on a new last axis and takes ``mean(axis=4)``. numpy reduces that length-3 axis as ``((x + y) + z)`` in
float32 and then divides by 3 (checked bit for bit in tests/test_run_cli.py), so accumulating ``acc = x;
acc += y; acc += z; acc /= 3`` in float32 gives the same bits while holding one volume instead of four.

The accumulator is channel-first ``(C, S, S, S)`` so that each bundle's volume is contiguous for the
post-processing that follows (:class:`runtime.network.fused_cube.FusedCube`: given the box that the way back
reads, it keeps only that box of most channels). Batches have the bundle's fixed size; a short last batch is
padded with zeros and the padded outputs are dropped.

Exact shortcut: a slice whose 9 x S x S values are all zero normalises to all zeros (``(0 - 0) / (0 + 1e-7)``), so
every such slice gives the same network output. It is computed once (in a batch of zeros) and copied; the count
of skipped slices is reported. The result is exact for a given backend, which computes each batch row
independently of the others.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from runtime.network.backends import Backend
from runtime.network.fused_cube import Box, FusedCube, runs

Progress = Callable[[int], None]
DIRECTIONS = ("x", "y", "z")


@dataclass(frozen=True)
class SliceStats:
    """How the 3 x S slices were computed."""

    slices: int  # 3 * S
    run: int  # slices that went through the network (non-zero content)
    skipped: int  # all-zero slices, filled from the one shared zero-slice output
    batches: int  # backend calls, the zero batch included

    def as_dict(self) -> dict[str, int]:
        return {"slices": self.slices, "run": self.run, "skipped": self.skipped, "batches": self.batches}


def _run(backend: Backend, batch: np.ndarray, n_classes: int) -> np.ndarray:
    out = backend(batch)
    expected = (batch.shape[0], n_classes, batch.shape[2], batch.shape[3])
    if out.shape != expected or out.dtype != np.float32:
        raise RuntimeError(f"backend {backend.name} returned {out.dtype}{tuple(out.shape)}, "
                           f"expected float32{expected}")
    return out


def fused_probabilities(cube: np.ndarray, backend: Backend, batch_size: int, n_classes: int,
                        progress: Progress | None = None, directions: tuple[int, ...] = (0, 1, 2),
                        box: Box | None = None, whole: tuple[int, ...] = ()) -> tuple[np.ndarray | FusedCube,
                                                                                        SliceStats]:
    """Mean over the x, y and z directions of the per-slice probabilities of ``cube`` (S, S, S, 9) float32.

    Returns ``(fused (C, S, S, S) float32, stats)``; ``fused[c]`` is upstream's ``mean_fusion(...)[..., c]``.
    ``progress(n)`` is called after every batch with the number of slices it completed. ``directions=(1,)``
    (TOM): upstream's ``single_orientation`` path, ``trainer.predict_img`` along y: the outputs themselves, no mean.
    ``box``: keep only that box of the cube, except the channels ``whole``; ``fused`` is then a
    :class:`runtime.network.fused_cube.FusedCube` whose ``fused[c]`` equals upstream's inside the box (and for
    the ``whole`` channels everywhere) and is 0 elsewhere.
    """
    if cube.ndim != 4 or cube.shape[3] != 9 or len(set(cube.shape[:3])) != 1 or cube.dtype != np.float32:
        raise ValueError(f"expected a float32 cube (S, S, S, 9), got {cube.dtype}{cube.shape}")
    size = cube.shape[0]
    acc = FusedCube(n_classes, size, box, whole)
    batch = np.zeros((batch_size, 9, size, size), dtype=np.float32)
    occupied = np.any(cube != 0, axis=3)  # (S, S, S): voxel has a nonzero channel
    zero_output: np.ndarray | None = None
    run = skipped = batches = 0

    for axis in directions:
        others = tuple(a for a in range(3) if a != axis)
        nonzero = occupied.any(axis=others)
        first = axis == directions[0]
        empty = np.flatnonzero(~nonzero)
        if len(empty):
            if zero_output is None:
                batch[:] = 0
                zero_output = _run(backend, batch, n_classes)[0].copy()  # (C, S, S)
                batches += 1
            acc.store(axis, empty, zero_output[:, None], first)
            skipped += len(empty)
            if progress:
                progress(len(empty))
        todo = np.flatnonzero(nonzero)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            n = len(chunk)
            # (n, a, b, 9) -> (n, 9, a, b): upstream's sample_slices layout for this direction
            for first_slice, stop, k in runs(chunk):
                slices = np.moveaxis(cube[(slice(None),) * axis + (slice(first_slice, stop),)], axis, 0)
                np.copyto(batch[k:k + stop - first_slice], slices.transpose(0, 3, 1, 2))
            batch[n:] = 0
            out = _run(backend, batch, n_classes)
            acc.store(axis, chunk, out[:n].transpose(1, 0, 2, 3), first)  # (C, n, a, b): slice index at 1
            del out  # not alive during the next batch's call: one batch's outputs at a time (24 MB at S=144)
            run += n
            batches += 1
            if progress:
                progress(n)
    if len(directions) > 1:
        acc.divide(len(directions))
    fused = acc.boxed_volumes if acc.is_plain else acc
    return fused, SliceStats(slices=len(directions) * size, run=run, skipped=skipped, batches=batches)
