"""``get_image_spacing IN`` (or ``-i IN``): print an image's voxel spacing, as upstream's FLIRT calls use it.

Mirrors ``bin/get_image_spacing`` and ``img_utils.get_image_spacing`` (TractSeg 2.10), which take the path as a
positional argument and print ``|affine[0, 0]|`` rounded to 2 decimals: the same line here (Python's ``round`` on
nibabel's float64 affine element, then ``abs`` and ``str``: e.g. ``1.25``, ``2.0``). Upstream assumes an isotropic,
unrotated grid; where it is not (the axes' voxel sizes differ, or the first axis is rotated so that affine[0, 0]
is not its voxel size) the printed line stays upstream's and a warning on stderr says what the voxel sizes are.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from runtime.tools.common import open_image

log = logging.getLogger("tractseg_aot")

NAME = "get_image_spacing"
HELP = "Print a NIfTI image's voxel spacing as upstream does (|affine[0,0]| rounded to 2 decimals)."
TOLERANCE_MM = 1e-3


def image_spacing(file_in: str | os.PathLike[str]) -> str:
    """The line upstream prints for ``file_in``; warns (log) when the grid is not isotropic and unrotated."""
    affine = open_image(file_in).affine
    spacing = str(abs(round(affine[0, 0], 2)))
    sizes = np.linalg.norm(affine[:3, :3], axis=0)
    if np.ptp(sizes) > TOLERANCE_MM or abs(abs(affine[0, 0]) - sizes[0]) > TOLERANCE_MM:
        log.warning("%s: voxel sizes are %s mm%s; the spacing printed is |affine[0,0]| as upstream's", file_in,
                    " x ".join(f"{size:.4g}" for size in sizes),
                    "" if abs(abs(affine[0, 0]) - sizes[0]) <= TOLERANCE_MM else " and the grid is rotated")
    return spacing
