"""``--preprocess``: the run in MNI space, as upstream's ``move_to_MNI_space`` / ``move_to_subject_space``, without
FSL (:mod:`runtime.preprocess`). The subject's first-peak-length map (or the FA given with ``--fa``) is registered
rigidly to upstream's MNI FA template; the peaks are resampled onto the template's field of view at the subject's
voxel size, every vector rotated by the registration's rotation; the network runs there; then every NIfTI output
written in the staging folder is brought back to the input's grid and affine before the commit: masks
nearest-neighbour, probabilities and density maps linear. ``statistics.json`` and ``preview.png`` describe the
MNI-space masks. For a raw DWI the peaks are made in subject space first, then moved as peaks (upstream moves the
DWI and rotates its bvecs; the peaks it then makes are the same field up to interpolation)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from runtime.errors import InputError, one_line
from runtime.io.nifti_io import write_nifti_atomic
from runtime.io.peaks_input import ReadPeaks
from runtime.options import PreprocessOptions
from runtime.preprocess import (as_moving, find_template, load_template, mni_grid, peaks_to_mni, register_rigid,
                                subject_fa_like, to_subject)

log = logging.getLogger("tractseg_aot")


@dataclass(frozen=True)
class MniMove:
    """Where a subject's run happened: its grid, the MNI grid, and the rigid transform between them."""

    subject_to_mni: np.ndarray
    subject_affine: np.ndarray
    subject_shape: tuple[int, int, int]
    mni_affine: np.ndarray
    mni_shape: tuple[int, int, int]
    template: Path
    seconds: float

    def record(self) -> dict[str, Any]:
        """The run report's ``preprocess`` entry (world mm -> world mm)."""
        return {"subject_to_mni": np.round(self.subject_to_mni, 6).tolist(), "template": str(self.template),
                "mni_shape": list(self.mni_shape), "seconds": round(self.seconds, 3)}


def _fa(path: str, peaks: ReadPeaks) -> np.ndarray:
    try:
        image = nib.load(path)
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as error:  # nibabel raises many types for a damaged file
        raise InputError(f"{path}: --fa: not a readable NIfTI image ({one_line(error, 120)})") from None
    if data.shape[:3] != peaks.data.shape[:3] or not np.allclose(image.affine, peaks.affine, atol=1e-3):
        raise InputError(f"{path}: --fa: not on the peaks' grid ({data.shape[:3]} vs {peaks.data.shape[:3]})")
    return as_moving(data, f"{path}: --fa")


def move_to_mni(peaks: ReadPeaks, options: PreprocessOptions) -> tuple[ReadPeaks, MniMove]:
    """The peaks on the MNI grid (a new ReadPeaks whose affine is that grid's) and how they got there."""
    started = time.perf_counter()
    template_path = find_template(options.template)
    template, template_affine = load_template(template_path)
    moving = _fa(options.fa, peaks) if options.fa else subject_fa_like(peaks.data, peaks.affine)
    subject_to_mni = register_rigid(moving, peaks.affine, template, template_affine)
    mni_affine, mni_shape = mni_grid(template_affine, template.shape, peaks.affine)
    moved = peaks_to_mni(peaks.data, peaks.affine, subject_to_mni, mni_affine, mni_shape)
    shape = tuple(int(n) for n in peaks.data.shape[:3])
    move = MniMove(subject_to_mni, peaks.affine, shape, mni_affine, tuple(int(n) for n in mni_shape), template_path,
                   time.perf_counter() - started)
    angle = np.degrees(np.arccos(np.clip((np.trace(subject_to_mni[:3, :3]) - 1) / 2, -1, 1)))
    log.info("%s: registered to the MNI template %s (rotation %.1f deg, translation %.1f mm) in %.1f s",
             peaks.source, template_path, angle, float(np.linalg.norm(subject_to_mni[:3, 3])), move.seconds)
    return ReadPeaks(moved, mni_affine, peaks.source), move


def back_to_subject(files: list[Path], move: MniMove, probabilities: bool, output_type: str) -> None:
    """Every NIfTI output in ``files`` (staged paths, on the MNI grid) rewritten on the subject's grid, in place,
    with its dtype: masks nearest-neighbour; probabilities and density maps linear."""
    kind = "linear" if probabilities or output_type == "dm_regression" else "mask"
    for path in files:
        if not path.name.endswith((".nii.gz", ".nii")):
            continue
        image = nib.load(path)
        dtype = image.get_data_dtype()
        data = np.asarray(image.dataobj)
        back = to_subject(data, kind, move.subject_affine, move.subject_shape, move.subject_to_mni, move.mni_affine)
        write_nifti_atomic(np.asarray(back).astype(dtype, copy=False), move.subject_affine, path, dtype=dtype)
