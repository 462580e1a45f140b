"""Space transforms between the input peak image and the network's cube, as upstream TractSeg does them.

Mirrors (TractSeg 2.10):

* ``img_utils.get_flip_axis_to_match_MNI_space`` / ``img_utils.flip_axis``      -> :func:`mni_flip_axes`, :func:`flip`
* ``data_utils.crop_to_nonzero``                                               -> :func:`crop_to_nonzero`
* ``data_utils.pad_and_scale_img_to_square_img``                               -> :func:`pad_and_zoom_to_cube`
* ``data_utils.cut_and_scale_img_back_to_original_img`` followed by
  ``data_utils.add_original_zero_padding_again``                               -> :func:`to_original_space`

Order in the upstream CLI: flip (on the raw float data), nan_to_num, crop, pad + zoom; after inference and the
cube-space thresholds: zoom back, cut the pad, re-insert the crop, remove small blobs, and only then flip back.
Because the blob removal keeps the *first* largest blob in label (scan) order, it must run before the flip back.

Memory: the forward direction builds the float32 cube channel by channel into one preallocated
``(size, size, size, C)`` array; the backward direction works on one 3D bundle volume at a time and keeps the
caller's dtype (uint8 masks stay uint8).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

BBox = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


@dataclass(frozen=True)
class Transform:
    """What upstream's ``transformation`` dict holds.

    ``original_shape`` is the shape of the array that was padded (the *cropped* 4D peaks, channel dim included);
    ``pad_x/y/z`` are ``(biggest_dim - extent) / 2`` as floats (x.5 means one extra voxel of padding at the end);
    ``zoom`` is ``float(size) / biggest_dim``.
    """

    original_shape: tuple[int, ...]
    pad_x: float
    pad_y: float
    pad_z: float
    zoom: float

    def as_upstream_dict(self) -> dict[str, object]:
        """The same values under upstream's keys, for handing to upstream functions in tests."""
        return {"original_shape": self.original_shape, "pad_x": self.pad_x, "pad_y": self.pad_y,
                "pad_z": self.pad_z, "zoom": self.zoom}


def mni_flip_axes(affine: np.ndarray) -> tuple[int, ...]:
    """Array axes to flip so the voxel axes have MNI's signs (upstream get_flip_axis_to_match_MNI_space).

    x is flipped if ``affine[0, 0] > 0``, y if ``affine[1, 1] < 0``, z if ``affine[2, 2] < 0``. Only the diagonal is
    looked at (an oblique or permuted affine is handled as upstream handles it, i.e. by its diagonal signs).
    """
    axes: list[int] = []
    if affine[0, 0] > 0:
        axes.append(0)
    if affine[1, 1] < 0:
        axes.append(1)
    if affine[2, 2] < 0:
        axes.append(2)
    return tuple(axes)


def flip(data: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Reverse ``data`` along the given spatial axes (a view). Vector components are NOT negated, as upstream's
    CLI calls flip_axis with flip_peaks=False. Applying it twice with the same axes gives the input back."""
    if not axes:
        return data
    return np.flip(data, axis=axes)


def crop_to_nonzero(data4d: np.ndarray) -> tuple[np.ndarray, BBox]:
    """Crop to the bounding box of voxels where any channel is nonzero (upstream data_utils.crop_to_nonzero).

    Returns ``(cropped, bbox)`` with ``bbox = ((x0, x1), (y0, y1), (z0, z1))``, half-open ``[min, max + 1)``.
    ``cropped`` is a view into ``data4d`` (no copy; upstream returns a copy with the same values).

    Raises ``ValueError`` for a volume with no nonzero voxel; upstream fails there with numpy's
    "zero-size array to reduction operation minimum" error. Callers are expected to refuse such inputs earlier.
    """
    if data4d.ndim != 4:
        raise ValueError(f"crop_to_nonzero expects a 4D array (X, Y, Z, C), got shape {data4d.shape}")
    any_channel = np.any(data4d != 0, axis=3)
    if not any_channel.any():
        raise ValueError("crop_to_nonzero: the volume has no nonzero voxel, nothing to crop to")
    bounds: list[tuple[int, int]] = []
    for axis in range(3):
        other_axes = tuple(a for a in range(3) if a != axis)
        occupied = np.flatnonzero(np.any(any_channel, axis=other_axes))
        bounds.append((int(occupied[0]), int(occupied[-1]) + 1))
    bbox: BBox = (bounds[0], bounds[1], bounds[2])
    cropped = data4d[bbox[0][0]:bbox[0][1], bbox[1][0]:bbox[1][1], bbox[2][0]:bbox[2][1]]
    return cropped, bbox


def pad_and_zoom_to_cube(data4d: np.ndarray, size: int) -> tuple[np.ndarray, Transform]:
    """Zero-pad to a cube and zoom to ``size`` per channel, nearest neighbour
    (upstream data_utils.pad_and_scale_img_to_square_img, 4D branch).

    The cube edge before zooming is ``max(data4d.shape)`` -- the channel dim is included, as upstream does, so
    an input smaller than 9 voxels along every axis is padded to 9. The front pad along each axis is
    ``int((big - extent) / 2)``. Each channel is zoomed by ``float(size) / big`` with ``scipy.ndimage.zoom`` at
    order 0 straight into a preallocated float32 ``(size, size, size, C)`` output. Nearest-neighbour zoom only
    copies values, so float32 here equals upstream's float64 result cast to float32.
    """
    if data4d.ndim != 4:
        raise ValueError(f"pad_and_zoom_to_cube expects a 4D array (X, Y, Z, C), got shape {data4d.shape}")
    shape = tuple(int(s) for s in data4d.shape)
    big = max(shape)
    pads = tuple((big - shape[axis]) / 2.0 for axis in range(3))
    front = tuple(int(p) for p in pads)
    zoom = float(size) / big
    if round(big * zoom) != size:  # cannot happen for any realistic size; guard against a silent shape change
        raise ValueError(f"zoom {zoom} does not map edge {big} onto {size}")

    cube = np.zeros((size, size, size, shape[3]), dtype=np.float32)
    padded_channel = np.zeros((big, big, big), dtype=np.float32)
    inner = (slice(front[0], front[0] + shape[0]), slice(front[1], front[1] + shape[1]),
             slice(front[2], front[2] + shape[2]))
    zoomed_channel = np.empty((size, size, size), dtype=np.float32)
    for channel in range(shape[3]):
        padded_channel[inner] = data4d[..., channel]
        ndimage.zoom(padded_channel, zoom, output=zoomed_channel, order=0)
        cube[..., channel] = zoomed_channel
    transform = Transform(original_shape=shape, pad_x=pads[0], pad_y=pads[1], pad_z=pads[2], zoom=zoom)
    return cube, transform


def cube_box_read_back(transform: Transform, size: int) -> BBox:
    """The box of cube voxels that :func:`to_original_space` reads: ``((start, stop), ...)`` per cube axis.

    The way back zooms the whole cube at order 0 and cuts the pads, so only cube voxels whose nearest-neighbour
    images land inside the input's crop reach an output; the rest (the zoomed zero padding, ~30% of the cube for
    an HCP-size input) are read by nothing but cube-space post-processing. Found with the same ``ndimage.zoom``
    call on each axis's indices (order 0 zooms each axis on its own), so it cannot disagree with the way back.
    """
    zoomed = ndimage.zoom(np.arange(size, dtype=np.float64), 1.0 / transform.zoom, order=0)
    box = []
    for axis, pad in enumerate((transform.pad_x, transform.pad_y, transform.pad_z)):
        back_extra = 1 if pad - int(pad) == 0.5 else 0
        used = zoomed[int(pad):len(zoomed) - int(pad) - back_extra]
        box.append((int(used.min()), int(used.max()) + 1))
    return (box[0], box[1], box[2])


def to_original_space(vol3d: np.ndarray, transform: Transform, bbox: BBox,
                      original_shape: tuple[int, ...]) -> np.ndarray:
    """Map one cube-space bundle volume ``(S, S, S)`` back to the input grid ``original_shape[:3]``.

    Equals upstream's ``cut_and_scale_img_back_to_original_img`` followed by ``add_original_zero_padding_again``
    applied to this channel of the 4D output: zoom by ``1 / transform.zoom`` at order 0, cut the front pad
    ``int(pad)`` and the back pad ``int(pad)`` (+1 where the pad was x.5), then place the result at ``bbox`` in a
    zero array. The output has the input's dtype.
    """
    if vol3d.ndim != 3:
        raise ValueError(f"to_original_space expects one 3D volume, got shape {vol3d.shape}")
    unzoomed = ndimage.zoom(vol3d, 1.0 / transform.zoom, order=0)
    cut: list[slice] = []
    for axis, pad in enumerate((transform.pad_x, transform.pad_y, transform.pad_z)):
        back_extra = 1 if pad - int(pad) == 0.5 else 0
        cut.append(slice(int(pad), unzoomed.shape[axis] - int(pad) - back_extra))
    cropped = unzoomed[tuple(cut)]

    out = np.zeros(tuple(int(s) for s in original_shape[:3]), dtype=vol3d.dtype)
    region = tuple(slice(start, stop) for start, stop in bbox)
    if out[region].shape != cropped.shape:
        raise ValueError(f"cube maps back to shape {cropped.shape} but the crop box {bbox} has shape "
                         f"{out[region].shape}; transform and bbox do not belong together")
    out[region] = cropped
    return out
