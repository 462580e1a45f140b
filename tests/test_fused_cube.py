"""The fused probabilities keep only the box the way back reads (plus whole CA/FX volumes): outputs unchanged,
memory smaller (runtime.network.fused_cube, runtime.io.geometry.cube_box_read_back). Real small bundle (S=16,
ONNX Runtime), real NIfTI writes."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from runtime.io.geometry import crop_to_nonzero, cube_box_read_back, pad_and_zoom_to_cube, to_original_space
from runtime.models.manifest import load_manifest
from runtime.network.backends import open_backend
from runtime.network.fused_cube import FusedCube, runs
from runtime.network.predict import fused_probabilities
from runtime.outputs.postprocess import BUNDLE_SPECIFIC_RULES
from runtime.outputs.writers import OutputSpec, write_outputs
from tests.run_support import LAS, read, synthetic_peaks

SHAPE = (30, 21, 17)  # far from a cube: the zoomed crop fills ~40% of the cube


@pytest.fixture(scope="module")
def setup(tract_small):
    manifest = load_manifest(tract_small)
    backend = open_backend("onnxruntime", "cpu", manifest)
    cropped, bbox = crop_to_nonzero(synthetic_peaks(SHAPE))
    cube, transform = pad_and_zoom_to_cube(cropped, manifest.slice_size)
    whole = tuple(i for i, b in enumerate(manifest.bundles) if b in BUNDLE_SPECIFIC_RULES)
    return manifest, backend, cube, transform, bbox, whole


def test_runs_split_sorted_indices_into_contiguous_slices():
    assert runs([0, 1, 2, 5, 6, 9]) == [(0, 3, 0), (5, 7, 3), (9, 10, 5)]
    assert runs([]) == []


def test_box_is_what_the_way_back_reads_and_no_less():
    """Values outside the box never reach the input grid; moving any face of the box inwards changes it."""
    size = 16
    cube, transform = pad_and_zoom_to_cube(synthetic_peaks(SHAPE), size)
    box = cube_box_read_back(transform, size)
    assert box != ((0, size),) * 3  # not vacuous: this input's box is smaller than the cube
    rng = np.random.default_rng(0)
    volume = rng.random((size, size, size)).astype(np.float32)
    inside = np.zeros_like(volume)
    region = tuple(slice(a, b) for a, b in box)
    inside[region] = volume[region]
    full_box = ((0, SHAPE[0]), (0, SHAPE[1]), (0, SHAPE[2]))
    np.testing.assert_array_equal(to_original_space(volume, transform, full_box, SHAPE),
                                  to_original_space(inside, transform, full_box, SHAPE))
    for axis in range(3):
        for face in (box[axis][0], box[axis][1] - 1):
            shrunk = inside.copy()
            index = [slice(None)] * 3
            index[axis] = face
            shrunk[tuple(index)] = 0
            assert not np.array_equal(to_original_space(shrunk, transform, full_box, SHAPE),
                                      to_original_space(inside, transform, full_box, SHAPE))


def test_kept_box_gives_the_same_bits_and_files_as_the_whole_cube(setup, tmp_path):
    manifest, backend, cube, transform, bbox, whole = setup
    size = manifest.slice_size
    assert whole  # CA and FX are in the tract_segmentation bundles
    plain, _ = fused_probabilities(cube, backend, manifest.batch_size, manifest.n_classes)
    box = cube_box_read_back(transform, size)
    kept, _ = fused_probabilities(cube, backend, manifest.batch_size, manifest.n_classes, box=box, whole=whole)
    assert isinstance(plain, np.ndarray) and isinstance(kept, FusedCube)
    region = tuple(slice(a, b) for a, b in box)
    for c in range(manifest.n_classes):
        if c in whole:
            np.testing.assert_array_equal(kept[c], plain[c])
        else:
            np.testing.assert_array_equal(kept[c][region], plain[c][region])
            outside = np.ones((size,) * 3, dtype=bool)
            outside[region] = False
            assert not kept[c][outside].any()
    for probabilities in (False, True):
        files = {}
        for name, fused in (("plain", plain), ("kept", kept)):
            paths = tuple(tmp_path / f"{name}-{probabilities}" / f"{b}.nii.gz" for b in manifest.bundles)
            paths[0].parent.mkdir()
            spec = OutputSpec(output_type="tract_segmentation", bundles=manifest.bundles, paths=paths,
                              single_file=False, probabilities=probabilities, postprocess=True, affine=LAS,
                              flip_axes=(), transform=transform, bbox=bbox, shape=SHAPE)
            write_outputs(fused, spec)
            files[name] = np.stack([read(p)[0] for p in paths])
        assert files["plain"].any()  # not vacuous: some bundle has voxels / probabilities
        np.testing.assert_array_equal(files["kept"], files["plain"])


def test_no_accumulator_sized_temporaries(setup):
    """numpy's peak during the network step (tracemalloc) stays within what is kept plus one batch's buffers:
    below the whole (C, S, S, S) accumulator, so no store copies the accumulator or a direction of it."""
    manifest, backend, cube, transform, _, whole = setup
    size, c, b = manifest.slice_size, manifest.n_classes, manifest.batch_size
    box = cube_box_read_back(transform, size)
    backend(np.zeros((b, 9, size, size), np.float32))  # warm: first-call allocations are not the network step's
    tracemalloc.start()
    try:
        kept, _ = fused_probabilities(cube, backend, b, c, box=box, whole=whole)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    kept_bytes = kept.whole_volumes.nbytes + kept.boxed_volumes.nbytes
    whole_accumulator = c * size ** 3 * 4
    assert kept_bytes < 0.6 * whole_accumulator  # this input keeps ~40% of the boxed channels
    # slack: the occupancy mask (S^3 bools and its 9-channel temporary), the input batch, the shared zero-slice
    # output, and up to two batches of outputs alive at once inside a backend call
    slack = 10 * size ** 3 + b * 9 * size * size * 4 + c * size * size * 4 + 2 * b * c * size * size * 4
    assert peak <= kept_bytes + slack, (peak, kept_bytes, slack)
    assert peak < whole_accumulator
