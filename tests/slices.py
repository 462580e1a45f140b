"""Real-looking raw slice batches (B, 9, S, S) for comparing models and artifacts."""
from __future__ import annotations

import numpy as np

from tests.conftest import EXAMPLE_PEAKS


def synthetic_slices(count: int, size: int, seed: int) -> np.ndarray:
    """Peak-like slices: unit-ish vectors inside a disc, zero outside (like padded brain slices)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    x = rng.normal(0, 0.4, (count, 9, size, size)).astype(np.float32)
    x *= (r < size * 0.4)[None, None]
    return x


def example_slices(size: int, count: int) -> np.ndarray | None:
    """Middle slices (x, y and z) of the shared example peaks, cropped/padded/zoomed as upstream does."""
    if not EXAMPLE_PEAKS.is_file():
        return None
    from runtime.geometry import crop_to_nonzero, pad_and_zoom_to_cube
    from runtime.nifti_io import load_peaks

    data, _ = load_peaks(EXAMPLE_PEAKS)
    cube, _ = pad_and_zoom_to_cube(crop_to_nonzero(data)[0], size)
    mid = size // 2
    views = [cube[mid], cube[:, mid], cube[:, :, mid]]
    views = [np.moveaxis(v, -1, 0) for v in views][:count]
    return np.stack(views).astype(np.float32)
