"""``remove_negative_values IN OUT`` (or ``-i IN -o OUT``): set every negative voxel to 0.

Mirrors ``bin/remove_negative_values`` (TractSeg 2.10), which takes the two paths as positional arguments and
calls nibabel's ``get_data()``, removed in nibabel 5 (it raises ``ExpiredDeprecationError`` there, so upstream's
script no longer runs with a current nibabel). Here the data is read as ``np.asanyarray(img.dataobj)``, which is
what ``get_data()`` returned (nibabel's own replacement): the stored type, scaled when the header scales. Values
< 0 become 0 (NaN stays NaN), and the result is written as ``nib.Nifti1Image(data, affine)`` (a fresh header, the
array's type): the file upstream wrote, byte for byte. ``-i``/``-o`` are accepted as well as the positional form.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from runtime.tools.common import open_image, output_file, read_stored, write_image

NAME = "remove_negative_values"
HELP = "Set every negative voxel of a NIfTI image to 0 (the stored type is kept)."


def add_arguments(parser: argparse.ArgumentParser, path) -> None:
    parser.add_argument("input", metavar="file_in", nargs="?", type=path, help="input NIfTI image (upstream's form)")
    parser.add_argument("output", metavar="file_out", nargs="?", type=path, help="output NIfTI image")
    parser.add_argument("-i", metavar="file_in", dest="file_in", type=path, help="input (instead of the positional)")
    parser.add_argument("-o", metavar="file_out", dest="file_out", type=path, help="output (instead of the positional)")


def validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One input and one output, each given once: positionally (upstream's form), by flag, or one of each (then the
    positional is whichever the flag leaves out)."""
    positional = [value for value in (args.input, args.output) if value is not None]
    flags = [value for value in (args.file_in, args.file_out) if value is not None]
    if len(positional) + len(flags) != 2:
        parser.error("give the input and the output once each: file_in file_out, or -i file_in -o file_out")
    if args.file_in is None:
        args.file_in = positional.pop(0)
    if args.file_out is None:
        args.file_out = positional.pop(0)


def remove_negative_values(file_in: str | os.PathLike[str], file_out: str | os.PathLike[str]) -> Path:
    """Write ``file_in`` with every value < 0 set to 0 to ``file_out``; returns ``file_out``."""
    image = open_image(file_in)
    target = output_file(file_out)
    data = read_stored(image, file_in)
    data[data < 0] = 0
    return write_image(data, image.affine, target)


def run(args: argparse.Namespace) -> None:
    remove_negative_values(args.file_in, args.file_out)
