"""The fused probabilities (C, S, S, S) float32, holding only the voxels that something reads.

An HCP-size input's crop is not a cube: zero-padded to one, ~30% of the zoomed cube is padding, and the way back
to the input grid (:func:`runtime.io.geometry.to_original_space`) never reads those voxels. So each channel keeps
the box that is read back (:func:`runtime.io.geometry.cube_box_read_back`), except the channels whose
post-processing works in cube space on the whole volume (upstream's bundle-specific rule for CA and FX: blob
sizes and a closing over the cube), which keep every voxel. Measured on a 145x174x145 subject: 571 MiB instead
of 820 MiB for 72 bundles.

Every kept voxel is computed exactly as before: the same float32 ``x``, ``+= y``, ``+= z``, ``/= 3`` per voxel.
``fused[c]`` gives channel ``c`` as a whole (S, S, S) volume: a view for a whole-cube channel, else a new array
with the box in place and 0 where nothing reads it. Slice stores go by contiguous runs of basic slices, so
no store makes a temporary of the accumulator's size.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Box = tuple[tuple[int, int], ...]
Runs = list[tuple[int, int, int]]  # (first, stop, position in the destination)


def runs(indices: Sequence[int]) -> Runs:
    """Contiguous runs of sorted ``indices``: ``(first, stop, where the run starts in indices)``."""
    found: Runs = []
    for k, i in enumerate(int(x) for x in indices):
        if found and found[-1][1] == i:
            found[-1] = (found[-1][0], i + 1, found[-1][2])
        else:
            found.append((i, i + 1, k))
    return found


class FusedCube:
    """Channel-first fused probabilities of a (S, S, S) cube; see the module docstring."""

    def __init__(self, n_classes: int, size: int, box: Box | None = None, whole: Sequence[int] = ()):
        self.shape = (n_classes, size, size, size)
        self.dtype = np.dtype(np.float32)
        self.box = tuple(box) if box is not None else ((0, size),) * 3
        self.whole = tuple(sorted(set(whole)))
        boxed = [c for c in range(n_classes) if c not in self.whole]
        # channels as runs: (first channel, stop, first row in the array that holds them)
        self._whole_runs = runs(self.whole)
        self._boxed_runs = runs(boxed)
        self._row = {c: r for r, c in enumerate(self.whole)} | {c: r for r, c in enumerate(boxed)}
        extent = tuple(b - a for a, b in self.box)
        self.whole_volumes = np.empty((len(self.whole), size, size, size), dtype=np.float32)
        self.boxed_volumes = np.empty((len(boxed), *extent), dtype=np.float32)

    @property
    def is_plain(self) -> bool:
        """Every channel keeps every voxel: :attr:`boxed_volumes` is the whole (C, S, S, S) array."""
        return not self.whole and self.boxed_volumes.shape[1:] == self.shape[1:]

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, channel: int) -> np.ndarray:
        c = int(channel)
        if not 0 <= c < self.shape[0]:
            raise IndexError(f"channel {channel} out of range for {self.shape[0]} channels")
        if c in self.whole:
            return self.whole_volumes[self._row[c]]
        volume = np.zeros(self.shape[1:], dtype=np.float32)
        volume[tuple(slice(a, b) for a, b in self.box)] = self.boxed_volumes[self._row[c]]
        return volume

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        stacked = np.stack([self[c] for c in range(self.shape[0])])
        return stacked if dtype is None else stacked.astype(dtype)

    def store(self, axis: int, slices: Sequence[int], values: np.ndarray, first: bool) -> None:
        """Put (``first``) or add ``values`` (C, n, a, b): the outputs of slices ``slices`` (sorted) along cube
        axis ``axis``, the two other axes in order; ``values`` may broadcast along n."""
        others = [a for a in range(3) if a != axis]
        whole = np.moveaxis(self.whole_volumes, axis + 1, 1)
        boxed = np.moveaxis(self.boxed_volumes, axis + 1, 1)
        (lo, hi), (a0, a1), (b0, b1) = self.box[axis], self.box[others[0]], self.box[others[1]]
        for start, stop, k in runs(slices):
            source = values[:, k:k + stop - start] if values.shape[1] != 1 else values
            for c0, c1, row in self._whole_runs:
                _put(whole[row:row + c1 - c0, start:stop], source[c0:c1], first)
            s0, s1 = max(start, lo), min(stop, hi)
            if s0 >= s1:
                continue
            inside = source[:, s0 - start:s1 - start] if source.shape[1] != 1 else source
            for c0, c1, row in self._boxed_runs:
                _put(boxed[row:row + c1 - c0, s0 - lo:s1 - lo], inside[c0:c1, :, a0:a1, b0:b1], first)

    def divide(self, divisor: int) -> None:
        self.whole_volumes /= np.float32(divisor)
        self.boxed_volumes /= np.float32(divisor)


def _put(target: np.ndarray, values: np.ndarray, first: bool) -> None:
    if first:
        target[...] = values
    else:
        target += values
