"""Real-looking raw slice batches (N, 9, S, S) for checking artifacts against the live model.

Middle x/y/z slices of the shared example peaks (upstream's test input) when it is beside the project, prepared
exactly as the runtime prepares them, plus synthetic peak-like slices: vectors inside a disc, zero outside.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.weights.reference import synthetic_slices  # the check batches' slices: one definition for both

EXAMPLE_PEAKS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / \
    "tractseg_example_peaks_2.5mm.nii.gz"


def example_cube(size: int) -> np.ndarray:
    """The example peaks as the runtime prepares them: cropped to the brain, padded and zoomed to (S, S, S, 9)."""
    from runtime.io.geometry import crop_to_nonzero, pad_and_zoom_to_cube
    from runtime.io.nifti_io import load_peaks

    data, _ = load_peaks(EXAMPLE_PEAKS)
    return pad_and_zoom_to_cube(crop_to_nonzero(data)[0], size)[0]


def example_slices(size: int, count: int = 3) -> np.ndarray | None:
    """Up to 3 middle slices (x, y, z) of the example peaks cube, or None when the file is absent."""
    if not EXAMPLE_PEAKS.is_file():
        return None
    cube = example_cube(size)
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


def calibration_batches(batch_size: int, size: int, count: int = 16) -> tuple[list[np.ndarray], str]:
    """`count` slices for int8 calibration, in batches: evenly spaced x/y/z slices through the example peaks'
    brain when present (as the runtime prepares them), else synthetic slices; and which it was. `count` is rounded
    up to whole batches (the graph's batch size is fixed)."""
    count = -(-count // batch_size) * batch_size
    if EXAMPLE_PEAKS.is_file():
        cube = example_cube(size)
        picks = np.linspace(size * 0.25, size * 0.75, -(-count // 3)).astype(int)
        views = [np.moveaxis(view, -1, 0) for i in picks for view in (cube[i], cube[:, i], cube[:, :, i])][:count]
        slices, source = np.stack(views).astype(np.float32), f"{EXAMPLE_PEAKS.name}: {count} x/y/z slices"
    else:
        slices, source = synthetic_slices(count, size, seed=7), f"synthetic: {count} slices (seed 7)"
    return [slices[i:i + batch_size] for i in range(0, count, batch_size)], source
