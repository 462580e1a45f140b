"""``flip_peaks -i PEAKS -o OUT -a x|y|z``: negate one component of every peak of an MRtrix peaks image (the data
only, the affine stays).

Mirrors ``bin/flip_peaks`` (TractSeg 2.10): the image read with ``get_fdata()`` (float64), component ``axis`` of
each of the ``channels // 3`` peaks multiplied by -1, written as ``nib.Nifti1Image(data, affine)`` (float64, a
fresh header): the same file, byte for byte. Refused beyond upstream (which crashes on a 3D image and leaves the
trailing channels of a 4D image whose channel count is not a multiple of 3 unflipped): anything but a 4D image
with 3, 6, 9, ... channels.
"""
from __future__ import annotations

import os
from pathlib import Path

from runtime.errors import InputError
from runtime.tools.common import (
    image_shape,
    open_image,
    output_file,
    read_float64,
    write_image,
)

NAME = "flip_peaks"
HELP = "Flip MRtrix peaks along one axis (negates that component of every peak; the affine is kept)."
AXES = ("x", "y", "z")


def flip_peaks(file_in: str | os.PathLike[str], file_out: str | os.PathLike[str], axis: str) -> Path:
    """Write ``file_in`` with component ``axis`` of every peak negated to ``file_out``; returns ``file_out``."""
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
    image = open_image(file_in)
    shape = image_shape(image)
    if len(shape) != 4:
        raise InputError(f"{file_in}: a {len(shape)}D image, expected 4D peaks (3 channels per peak)")
    if shape[3] == 0 or shape[3] % 3:
        raise InputError(f"{file_in}: {shape[3]} channels, not peaks (expected a multiple of 3: x, y, z per peak)")
    target = output_file(file_out)
    data = read_float64(image, file_in)
    data[..., AXES.index(axis)::3] *= -1
    return write_image(data, image.affine, target)
