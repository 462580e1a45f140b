"""runtime.io.geometry against upstream TractSeg's data_utils / img_utils on small volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.upstream import upstream_modules
from runtime.io.geometry import (Transform, crop_to_nonzero, flip, mni_flip_axes, pad_and_zoom_to_cube,
                              to_original_space)

AXIS_NAMES = ("x", "y", "z")


def peaks_with_margins(shape: tuple[int, int, int], margins: tuple[tuple[int, int], ...], seed: int) -> np.ndarray:
    """Float32 (X, Y, Z, 9) with random values inside and zeros in the given (front, back) margins; one channel
    alone reaches the corner of the box so the bbox must be the any-channel box."""
    rng = np.random.default_rng(seed)
    data = np.zeros(shape + (9,), dtype=np.float32)
    box = tuple(slice(front, size - back) for (front, back), size in zip(margins, shape))
    inner = data[box]
    inner[..., 1:] = rng.standard_normal(inner[..., 1:].shape) * (rng.random(inner[..., 1:].shape) > 0.3)
    inner[..., 0] = 0.0
    inner[0, 0, 0, 0] = 0.75
    inner[-1, -1, -1, 5] = -0.5
    return data


@pytest.mark.parametrize("diagonal", [(-2, 2, 2), (2, 2, 2), (-2, -2, 2), (2, -2, -2), (-1, 1, -1), (0, 0, 0)])
def test_mni_flip_axes_matches_upstream(diagonal: tuple[int, int, int]) -> None:
    _, img_utils, _ = upstream_modules()
    affine = np.diag([*map(float, diagonal), 1.0])
    expected = tuple(AXIS_NAMES.index(name) for name in img_utils.get_flip_axis_to_match_MNI_space(affine))
    assert mni_flip_axes(affine) == expected


def test_flip_matches_upstream_and_is_its_own_inverse() -> None:
    _, img_utils, _ = upstream_modules()
    data = peaks_with_margins((7, 6, 5), ((1, 0), (0, 2), (1, 1)), seed=1)
    affine = np.diag([2.0, -2.0, 2.0, 1.0])
    expected, names = img_utils.flip_axis_to_match_MNI_space(data, affine)
    axes = mni_flip_axes(affine)
    assert axes == (0, 1) and names == ["x", "y"]
    flipped = flip(data, axes)
    np.testing.assert_array_equal(flipped, expected)
    np.testing.assert_array_equal(flip(flipped, axes), data)
    assert flip(data, ()) is data


@pytest.mark.parametrize("shape, margins", [
    ((13, 17, 11), ((2, 1), (3, 0), (0, 2))),
    ((9, 9, 9), ((0, 0), (0, 0), (0, 0))),
    ((6, 8, 7), ((1, 1), (2, 2), (3, 0))),
])
def test_crop_to_nonzero_matches_upstream(shape: tuple[int, int, int], margins: tuple[tuple[int, int], ...]) -> None:
    data_utils, _, _ = upstream_modules()
    data = peaks_with_margins(shape, margins, seed=2)
    cropped, bbox = crop_to_nonzero(data)
    expected, _, expected_bbox, original_shape = data_utils.crop_to_nonzero(data.astype(np.float64))
    assert [list(pair) for pair in bbox] == expected_bbox
    np.testing.assert_array_equal(cropped, expected)
    assert original_shape == data.shape


def test_crop_to_nonzero_refuses_all_zero_volume() -> None:
    with pytest.raises(ValueError, match="no nonzero voxel"):
        crop_to_nonzero(np.zeros((4, 5, 6, 9), dtype=np.float32))


@pytest.mark.parametrize("shape, size", [
    ((13, 17, 11), 16),   # integer pads
    ((12, 17, 10), 32),   # x.5 pads on x and z
    ((11, 6, 14), 16),    # zoom > 1
    ((5, 4, 6), 16),      # every axis < 9: the channel dim sets the cube edge
    ((20, 9, 3), 32),
])
def test_pad_and_zoom_to_cube_matches_upstream(shape: tuple[int, int, int], size: int) -> None:
    data_utils, _, _ = upstream_modules()
    data = peaks_with_margins(shape, ((0, 0), (0, 0), (0, 0)), seed=3)
    cube, transform = pad_and_zoom_to_cube(data, size)
    expected, expected_transform = data_utils.pad_and_scale_img_to_square_img(data.astype(np.float64), size,
                                                                              nr_cpus=1)
    assert cube.dtype == np.float32 and cube.shape == (size, size, size, 9)
    np.testing.assert_array_equal(cube, expected.astype(np.float32))
    assert transform.as_upstream_dict() == expected_transform
    assert transform == Transform(**expected_transform)


@pytest.mark.parametrize("shape, size, dtype", [
    ((13, 17, 11), 16, np.uint8),
    ((12, 17, 10), 32, np.float32),
    ((11, 6, 14), 16, np.int16),
    ((5, 4, 6), 16, np.uint8),
])
def test_to_original_space_matches_upstream_channelwise(shape: tuple[int, int, int], size: int,
                                                        dtype: type) -> None:
    data_utils, _, _ = upstream_modules()
    original = peaks_with_margins(shape, ((1, 2), (2, 1), (0, 3)) if min(shape) > 5 else ((0, 0),) * 3, seed=4)
    cropped, bbox = crop_to_nonzero(original)
    _, transform = pad_and_zoom_to_cube(cropped, size)
    rng = np.random.default_rng(5)
    if dtype == np.float32:
        cube_outputs = rng.random((size, size, size, 3)).astype(np.float32)
    else:
        cube_outputs = (rng.random((size, size, size, 3)) > 0.6).astype(dtype)

    expected = data_utils.cut_and_scale_img_back_to_original_img(cube_outputs, transform.as_upstream_dict(),
                                                                 nr_cpus=1)
    expected = data_utils.add_original_zero_padding_again(expected, [list(p) for p in bbox], original.shape, 3)
    for channel in range(3):
        ours = to_original_space(np.ascontiguousarray(cube_outputs[..., channel]), transform, bbox, original.shape)
        assert ours.dtype == dtype and ours.shape == shape
        np.testing.assert_array_equal(ours, expected[..., channel])


def test_flip_crop_pad_round_trip_matches_upstream_with_flipping_affine() -> None:
    data_utils, img_utils, _ = upstream_modules()
    original = peaks_with_margins((15, 12, 9), ((3, 1), (0, 4), (2, 0)), seed=6)
    original[2, 5, 4, 3] = np.nan
    affine = np.diag([1.25, -1.25, -1.25, 1.0])  # x, y and z all need flipping

    up_flipped, names = img_utils.flip_axis_to_match_MNI_space(original.astype(np.float64), affine)
    up_cropped, _, up_bbox, up_shape = data_utils.crop_to_nonzero(np.nan_to_num(up_flipped))
    up_cube, up_transform = data_utils.pad_and_scale_img_to_square_img(up_cropped, 32, nr_cpus=1)
    up_back = data_utils.cut_and_scale_img_back_to_original_img((up_cube[..., 2:4] > 0).astype(np.uint8),
                                                                up_transform, nr_cpus=1)
    up_back = data_utils.add_original_zero_padding_again(up_back, up_bbox, up_shape, 2)
    for name in names:
        up_back = img_utils.flip_axis(up_back, name)

    axes = mni_flip_axes(affine)
    cropped, bbox = crop_to_nonzero(np.nan_to_num(flip(original, axes)))
    cube, transform = pad_and_zoom_to_cube(cropped, 32)
    np.testing.assert_array_equal(cube, up_cube.astype(np.float32))
    for channel in range(2):
        mask = np.ascontiguousarray((cube[..., 2 + channel] > 0).astype(np.uint8))
        back = flip(to_original_space(mask, transform, bbox, original.shape), axes)
        np.testing.assert_array_equal(back, up_back[..., channel])


def test_example_peaks_cube_matches_upstream(example_peaks_path: Path) -> None:
    import nibabel as nib

    from runtime.io.nifti_io import load_peaks

    data_utils, img_utils, _ = upstream_modules()
    data, affine = load_peaks(example_peaks_path)
    assert data.shape == (73, 87, 73, 9) and data.dtype == np.float32

    image = nib.load(example_peaks_path)
    up_data, _ = img_utils.flip_axis_to_match_MNI_space(image.get_fdata(), image.affine)
    up_cropped, _, up_bbox, _ = data_utils.crop_to_nonzero(np.nan_to_num(up_data))
    del up_data
    up_cube, up_transform = data_utils.pad_and_scale_img_to_square_img(up_cropped, 144, nr_cpus=1)

    cropped, bbox = crop_to_nonzero(flip(data, mni_flip_axes(affine)))
    cube, transform = pad_and_zoom_to_cube(cropped, 144)
    assert [list(p) for p in bbox] == up_bbox
    assert transform.as_upstream_dict() == up_transform
    np.testing.assert_array_equal(cube, up_cube.astype(np.float32))
