"""``rotate_bvecs -i BVECS -t MATRIX -o OUT``: apply the rotation of a linear transformation (an FSL FLIRT .mat
file, or any affine) to FSL bvecs.

Mirrors ``bin/rotate_bvecs`` (TractSeg 2.10), and gives the same text byte for byte:

* the matrix file: whitespace-separated numbers converted to float32 as upstream (``np.array(strings)
  .astype(np.float32)``); its top-left 3x3 block, each column divided by its (float32) length, is the rotation;
* the bvecs: 3 rows (x, y, z; one column per volume), read as float64; the rotation times the bvecs;
* the output: ``np.savetxt(..., fmt="%1.6f")``, 3 rows (a single vector: 3 lines of one value, as upstream).

Beyond upstream: bvecs given as 3 columns (one row per volume, as MRtrix and dipy also accept; upstream crashes
on them) are read as their transpose, and the output is always FSL's 3 rows. Refused in one line: a file that is
not a rectangular table of finite numbers (upstream also accepts comma-separated bvecs; here, as for every bvecs
file the project reads, :func:`runtime.diffusion.inputs.read_gradient_table`, only whitespace), bvecs with neither
3 rows nor 3 columns, and a matrix smaller than 3x3 or with a zero column in its 3x3 block.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from runtime.diffusion.inputs import read_gradient_table
from runtime.errors import InputError, one_line
from runtime.io.atomic import atomic_target
from runtime.tools.common import output_file, written

NAME = "rotate_bvecs"
HELP = "Apply the rotation of a linear transformation (FSL .mat file) to FSL bvecs."


def read_matrix(path: Path) -> np.ndarray:
    """An FSL matrix file as upstream reads it: float32, at least 3x3, finite."""
    if not path.is_file():
        raise InputError(f"{path}: transformation matrix file not found")
    try:
        rows = [line.split() for line in path.read_text(encoding="utf-8").splitlines()]
        rows = [row for row in rows if row]
        if not rows:
            raise ValueError("empty file")
        if len({len(row) for row in rows}) > 1:
            raise ValueError("rows of different lengths")
        for token in (token for row in rows for token in row):
            float(token)  # (names the first token that is not a number)
        matrix = np.array(rows).astype(np.float32)
    except (UnicodeDecodeError, ValueError) as error:
        raise InputError(f"{path}: not a matrix of whitespace-separated numbers ({one_line(error, 120)})") from None
    if matrix.ndim != 2 or matrix.shape[0] < 3 or matrix.shape[1] < 3:
        raise InputError(f"{path}: a {'x'.join(str(n) for n in matrix.shape)} matrix, expected 4x4 (FSL) or at "
                         f"least 3x3")
    if not np.isfinite(matrix).all():
        raise InputError(f"{path}: the matrix holds non-finite values")
    return matrix


def rotation_of(matrix: np.ndarray) -> np.ndarray:
    """The top-left 3x3 block with each column scaled to unit length, in float32 as upstream, stored as float64."""
    linear = matrix[:3, :3]
    lengths = np.linalg.norm(linear, axis=0)
    if not (lengths > 0).all():
        raise ValueError("a zero column")
    rotation = np.zeros((3, 3))
    rotation[:] = linear / lengths
    return rotation


def read_bvecs(path: Path) -> np.ndarray:
    """FSL bvecs as upstream multiplies them: (3, N) C-ordered float64, or (3,) for a single vector."""
    if not path.is_file():
        raise InputError(f"{path}: bvecs file not found")
    table = read_gradient_table(path, "bvecs")
    if table.shape in ((1, 3), (3, 1)):
        return table.ravel().copy()
    if table.shape[0] == 3:
        return np.ascontiguousarray(table)
    if table.shape[1] == 3:
        return np.ascontiguousarray(table.T)
    raise InputError(f"{path}: bvecs are {table.shape[0]}x{table.shape[1]}, expected 3 rows (FSL: x, y, z; one "
                     f"column per volume)")


def rotate_bvecs(bvecs_in: str | os.PathLike[str], affine_in: str | os.PathLike[str],
                 bvecs_out: str | os.PathLike[str]) -> Path:
    """Write the rotated ``bvecs_in`` to ``bvecs_out``; returns ``bvecs_out``."""
    bvecs = read_bvecs(Path(bvecs_in))
    matrix_path = Path(affine_in)
    matrix = read_matrix(matrix_path)
    try:
        rotation = rotation_of(matrix)
    except ValueError as error:
        raise InputError(f"{matrix_path}: the matrix's 3x3 block has {error}, no rotation") from None
    target = output_file(bvecs_out, nifti=False)
    rotated = np.matmul(rotation, bvecs)

    def write() -> Path:
        with atomic_target(target) as temporary:
            np.savetxt(temporary, rotated, fmt="%1.6f")
        return target

    return written(write, target)
