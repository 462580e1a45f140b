"""``remove_negative_values IN OUT`` (or ``-i IN -o OUT``): set every negative voxel to 0.

Mirrors ``bin/remove_negative_values`` (TractSeg 2.10), which takes the two paths as positional arguments and
calls nibabel's ``get_data()``, removed in nibabel 5 (it raises ``ExpiredDeprecationError`` there, so upstream's
script no longer runs with a current nibabel). Here the data is read as ``np.asanyarray(img.dataobj)``, which is
what ``get_data()`` returned (nibabel's own replacement): the stored type, scaled when the header scales. Values
< 0 become 0 (NaN stays NaN), and the result is written as ``nib.Nifti1Image(data, affine)`` (a fresh header, the
array's type): the file upstream wrote, byte for byte. ``-i``/``-o`` are accepted as well as the positional form.
"""
from __future__ import annotations

import os
from pathlib import Path

from runtime.tools.common import open_image, output_file, read_stored, write_image

NAME = "remove_negative_values"
HELP = "Set every negative voxel of a NIfTI image to 0 (the stored type is kept)."


def remove_negative_values(file_in: str | os.PathLike[str], file_out: str | os.PathLike[str]) -> Path:
    """Write ``file_in`` with every value < 0 set to 0 to ``file_out``; returns ``file_out``."""
    image = open_image(file_in)
    target = output_file(file_out)
    data = read_stored(image, file_in)
    data[data < 0] = 0
    return write_image(data, image.affine, target)
