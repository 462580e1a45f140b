"""What the helper commands share: opening an input image, reading its data, and checking and writing an output,
each problem one line naming the file (:class:`InputError` for an input, :class:`OutputError` for an output)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from runtime.errors import InputError, OutputError, one_line
from runtime.io.nifti_io import open_peaks, write_nifti_atomic

log = logging.getLogger("tractseg_aot")

NIFTI_ENDINGS = (".nii", ".nii.gz")


def open_image(path: str | os.PathLike[str]) -> nib.Nifti1Pair:
    """The NIfTI image, header only (:func:`runtime.io.nifti_io.open_peaks`: a readable, non-empty regular file,
    a NIfTI-1/-2 header; nibabel's header fixes become warnings)."""
    return open_peaks(path)


def image_shape(image: nib.Nifti1Pair) -> tuple[int, ...]:
    return tuple(int(n) for n in image.header.get_data_shape())


def read_float64(image: nib.Nifti1Pair, path: str | os.PathLike[str]) -> np.ndarray:
    """``image.get_fdata()`` (float64, scaled), as upstream reads; a truncated or corrupt file is one line."""
    return _read(lambda: image.get_fdata(caching="unchanged"), path)


def read_stored(image: nib.Nifti1Pair, path: str | os.PathLike[str]) -> np.ndarray:
    """``np.asanyarray(image.dataobj)``: the stored type, scaled when the header scales (what nibabel's removed
    ``get_data()`` returned, which upstream's ``remove_negative_values`` calls)."""
    return _read(lambda: np.asanyarray(image.dataobj), path)


def _read(read, path) -> np.ndarray:
    try:
        data = read()
    except MemoryError:
        raise InputError(f"{path}: out of memory while reading the data") from None
    except Exception as error:  # truncated gzip (EOFError, zlib.error), short file (ValueError, OSError)
        raise InputError(f"{path}: cannot read the data, file truncated or corrupt ({one_line(error, 160)})") from error
    if not data.flags.writeable:
        data = np.array(data)
    return data


def output_file(path: str | os.PathLike[str], nifti: bool = True) -> Path:
    """Check an output name before any work: a NIfTI output ends in .nii or .nii.gz (any case), and no output is an
    existing folder or lies under a file."""
    target = Path(path)
    if nifti and not target.name.lower().endswith(NIFTI_ENDINGS):
        raise OutputError(f"{target}: output must end in .nii or .nii.gz")
    if target.is_dir():
        raise OutputError(f"{target}: is a folder, expected a file name")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{target}: {parent} is not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise OutputError(f"{target}: no permission to write in {parent}")
            break
    return target


def write_image(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    """``nib.save(nib.Nifti1Image(array, affine), path)`` (a fresh header, as upstream), atomically."""
    return written(lambda: write_nifti_atomic(array, affine, path), path)


def written(write, path: Path) -> Path:
    """``write()``, an OS error (disk full, no permission) as one line naming ``path``."""
    try:
        return write()
    except OSError as error:
        raise OutputError(f"{path}: cannot write ({one_line(error.strerror or error, 160)})") from None
