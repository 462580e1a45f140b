"""Write a 4D NIfTI one 3D volume at a time, byte for byte what ``nib.save(nib.Nifti1Image(data4d, affine))`` writes.

NIfTI stores the data in Fortran order, so the volumes of a 4D image follow each other on disk: the header comes
from nibabel for a zero-strided stand-in of the full shape (no memory), then every volume is appended with
nibabel's own ``array_to_file`` through nibabel's gzip opener. Upstream writes ``--single_output_file`` from one
(X, Y, Z, C) array; here the CLI never holds more than one output volume of it.

Like :func:`runtime.io.nifti_io.write_nifti_atomic`, the file goes to a hidden temporary name in the target folder,
is fsynced and renamed over the target; on failure the temporary file is removed.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.openers import Opener
from nibabel.volumeutils import array_to_file, seek_tell

from runtime.io.atomic import atomic_target


def nifti_header(shape: tuple[int, ...], dtype: np.dtype, affine: np.ndarray) -> nib.Nifti1Header:
    """The header nibabel writes for ``Nifti1Image(array of shape/dtype, affine)`` without scaling."""
    stand_in = np.broadcast_to(np.zeros((), dtype=dtype), shape)  # shape and dtype only, no memory
    image = nib.Nifti1Image(stand_in, np.asarray(affine, dtype=np.float64))
    image.update_header()
    header = image.header.copy()
    header.set_data_dtype(dtype)
    header.set_slope_inter(1.0, 0.0)  # what nibabel writes for an unscaled array
    return header


def write_nifti_volumes(volumes: Iterable[np.ndarray], shape: tuple[int, int, int, int], dtype: np.dtype,
                        affine: np.ndarray, path: str | os.PathLike[str],
                        on_volume: Callable[[int], None] | None = None) -> Path:
    """Write ``shape[3]`` volumes of shape ``shape[:3]`` as one 4D image with on-disk ``dtype``.

    Each volume's dtype must cast safely to ``dtype`` (no scaling is ever needed: uint8 masks as int32, float32
    as float32); a volume count, shape or dtype that does not fit raises ``ValueError`` and leaves no file.
    """
    target = Path(path)
    header = nifti_header(shape, np.dtype(dtype), affine)
    with atomic_target(target) as temporary:
        count = 0
        with Opener(temporary, "wb") as stream:
            header.write_to(stream)
            seek_tell(stream, header.get_data_offset(), write0=True)
            for volume in volumes:
                if volume.shape != tuple(shape[:3]) or count >= shape[3]:
                    raise ValueError(f"volume {count} of shape {volume.shape} does not fit a 4D image {shape}")
                if not np.can_cast(volume.dtype, dtype, "safe"):
                    raise ValueError(f"volume dtype {volume.dtype} does not fit {np.dtype(dtype)} unscaled")
                array_to_file(volume, stream, np.dtype(dtype), offset=None, order="F")
                count += 1
                if on_volume:
                    on_volume(count)
        if count != shape[3]:
            raise ValueError(f"got {count} volumes for a 4D image with {shape[3]}")
    return target
