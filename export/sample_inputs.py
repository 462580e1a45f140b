"""Real-looking raw slice batches (N, 9, S, S) for checking artifacts against the live model.

Middle x/y/z slices of the shared example peaks (upstream's test input) when it is beside the project, prepared
exactly as the runtime prepares them, plus synthetic peak-like slices: vectors inside a disc, zero outside.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

EXAMPLE_PEAKS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / \
    "tractseg_example_peaks_2.5mm.nii.gz"


def synthetic_slices(count: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    inside = np.hypot(yy - size / 2, xx - size / 2) < size * 0.4
    x = rng.normal(0, 0.4, (count, 9, size, size)).astype(np.float32)
    return x * inside[None, None]


def example_slices(size: int, count: int = 3) -> np.ndarray | None:
    """Up to 3 middle slices (x, y, z) of the example peaks cube, or None when the file is absent."""
    if not EXAMPLE_PEAKS.is_file():
        return None
    from runtime.geometry import crop_to_nonzero, pad_and_zoom_to_cube
    from runtime.nifti_io import load_peaks

    data, _ = load_peaks(EXAMPLE_PEAKS)
    cube, _ = pad_and_zoom_to_cube(crop_to_nonzero(data)[0], size)
    mid = size // 2
    views = [cube[mid], cube[:, mid], cube[:, :, mid]][:count]
    return np.stack([np.moveaxis(v, -1, 0) for v in views]).astype(np.float32)


def check_batches(batch_size: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """Two full batches: example slices first (when present) topped up with synthetic ones, then synthetic."""
    first = synthetic_slices(batch_size, size, seed)
    real = example_slices(size, count=min(3, batch_size))
    if real is not None:
        first[: len(real)] = real
    return [first, synthetic_slices(batch_size, size, seed + 1)]
