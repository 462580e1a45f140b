"""From the fused cube-space probabilities to the written files, one bundle at a time.

Per bundle (upstream ``run_tractseg`` after ``mean_fusion``, then ``bin/TractSeg``'s flip back and save):
threshold in cube space (tract: :func:`tract_mask`, endings: :func:`endings_mask`, probabilities: none) -> zoom
back, un-pad, un-crop (:func:`to_original_space`) -> remove small blobs (tract segmentation with post-processing)
-> flip back to the input's axes -> write. Only one bundle volume in the input grid exists at a time: per-bundle
files are written as they are made, and ``--single_output_file`` streams the volumes into one 4D file.

``--rescale_dm`` (dm_regression) is ``bin/TractSeg``'s ``img_utils.scale_to_range(seg, range(0, 100))`` after the
threshold: ``(seg - min) / (max - min)`` over the whole 4D output (every bundle, the zero padding included), so
:func:`value_range` makes a first pass for the two numbers. Upstream's ``range(0, 100)`` puts the result in [0, 1],
not [0, 100] (``range[1]`` is 1); we write upstream's values. An output whose min equals its max (upstream: 0 / 0,
NaN everywhere) is written unscaled, with a warning.

The on-disk dtype is upstream's (:func:`output_dtype`). Upstream's blob removal returns int32 for every bundle
that had a voxel and the uint8 input for an empty one, and the stacked result is int32 unless *every* bundle
was empty; that is only known at the end, so in that one case the files are rewritten as uint8 zeros.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.io.geometry import BBox, Transform, flip, to_original_space
from runtime.io.nifti_io import output_dtype, write_nifti_atomic
from runtime.io.nifti_stream import write_nifti_volumes
from runtime.outputs.postprocess import endings_mask, remove_small_blobs, tract_mask


@dataclass(frozen=True)
class OutputSpec:
    """What to make of the fused probabilities and where it goes."""

    output_type: str  # tract_segmentation | endings_segmentation
    bundles: tuple[str, ...]  # output channel names, in the model's order
    paths: tuple[Path, ...]  # one per bundle, or the one 4D file
    single_file: bool
    probabilities: bool  # --get_probabilities: float32, no threshold, no post-processing
    postprocess: bool  # remove small blobs (tract_segmentation only; not --no_postprocess)
    affine: np.ndarray  # the input's affine, written unchanged
    flip_axes: tuple[int, ...]  # axes flipped to MNI signs; flipped back before writing
    transform: Transform
    bbox: BBox
    shape: tuple[int, int, int]  # the input grid
    threshold: float | None = None  # dm_regression: values below it set to 0 (bin/TractSeg, Config.THRESHOLD)
    value_range: tuple[np.float32, np.float32] | None = None  # --rescale_dm: (min, max) of the whole output
    single_orientation: bool = False  # --single_orientation: endings masks written as float32 (upstream's)

    @property
    def removes_blobs(self) -> bool:
        return self.output_type == "tract_segmentation" and self.postprocess and not self.probabilities

    def dtype(self, all_masks_empty: bool = False) -> np.dtype:
        return output_dtype(self.output_type, self.probabilities, self.postprocess and not self.probabilities,
                            all_masks_empty=all_masks_empty, single_orientation=self.single_orientation)


def bundle_volume(prob_cube: np.ndarray, name: str, spec: OutputSpec) -> tuple[np.ndarray, bool]:
    """One bundle in the input's grid and axis order, and whether it had a voxel before blob removal."""
    if spec.probabilities or spec.output_type == "dm_regression":
        volume = prob_cube
    elif spec.output_type == "tract_segmentation":
        volume = tract_mask(prob_cube, name)
    else:
        volume = endings_mask(prob_cube)
    volume = to_original_space(volume, spec.transform, spec.bbox, spec.shape)
    if spec.threshold is not None:
        volume[volume < spec.threshold] = 0  # a new array: fused is untouched
    had_voxels = bool(volume.any())
    if spec.removes_blobs and had_voxels:
        volume = remove_small_blobs(volume)
    if spec.value_range is not None:
        low, high = spec.value_range
        volume = (volume - low) / (high - low)  # float32 throughout, as upstream's scale_to_range
    return flip(volume, spec.flip_axes), had_voxels


def value_range(fused: np.ndarray, spec: OutputSpec) -> tuple[np.float32, np.float32] | None:
    """(min, max) over every bundle's written values (the threshold applied), or None when they are all equal
    (nothing to rescale: upstream would divide 0 by 0)."""
    low = high = None
    for index, name in enumerate(spec.bundles):
        volume, _ = bundle_volume(fused[index], name, spec)
        low = volume.min() if low is None else min(low, volume.min())
        high = volume.max() if high is None else max(high, volume.max())
    return None if low == high else (low, high)


def write_outputs(fused: np.ndarray, spec: OutputSpec,
                  on_bundle: Callable[[int, str, np.ndarray], None] | None = None) -> tuple[list[Path], np.dtype]:
    """Write every output of ``fused`` (C, S, S, S); returns the files written and their on-disk dtype.
    ``on_bundle(index, name, volume)`` sees each bundle's volume on the input grid as it is written."""
    if fused.shape[0] != len(spec.bundles):
        raise ValueError(f"{fused.shape[0]} probability volumes for {len(spec.bundles)} bundles")
    dtype = spec.dtype()
    nonempty = 0

    def volumes() -> Iterator[np.ndarray]:
        nonlocal nonempty
        for index, name in enumerate(spec.bundles):
            volume, had_voxels = bundle_volume(fused[index], name, spec)
            nonempty += had_voxels
            if on_bundle:
                on_bundle(index, name, volume)
            yield volume

    if spec.single_file:
        write_nifti_volumes(volumes(), (*spec.shape, len(spec.bundles)), dtype, spec.affine, spec.paths[0])
    else:
        for volume, path in zip(volumes(), spec.paths, strict=True):
            write_nifti_atomic(volume, spec.affine, path, dtype=dtype)

    empty_dtype = spec.dtype(all_masks_empty=True)
    if nonempty == 0 and empty_dtype != dtype:  # upstream keeps uint8 when no bundle has a voxel
        zeros = np.zeros(spec.shape, dtype=empty_dtype)
        if spec.single_file:
            write_nifti_volumes((zeros for _ in spec.bundles), (*spec.shape, len(spec.bundles)), empty_dtype,
                                spec.affine, spec.paths[0])
        else:
            for path in spec.paths:
                write_nifti_atomic(zeros, spec.affine, path)
        dtype = empty_dtype
    return list(spec.paths), dtype
