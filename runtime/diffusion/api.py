"""``peaks_from_dwi``: the one entry point (see the package docstring for the contract)."""
from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from runtime.diffusion import mrtrix
from runtime.diffusion.inputs import DiffusionInputs, check_inputs, default_brain_mask
from runtime.errors import InputError
from runtime.io.atomic import atomic_target

ENGINES = ("auto", "mrtrix", "dipy")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeaksResult:
    """What :func:`peaks_from_dwi` made. ``peaks`` is ``<workdir>/peaks.nii.gz`` (upstream's name), 9 channels,
    float32, the DWI's grid; ``engine`` is the engine that ran ("mrtrix" or "dipy", never "auto")."""

    peaks: Path
    engine: str
    csd_type: str
    brain_mask: Path | None  # the mask file used (given, found, or made and kept as nodif_brain_mask.nii.gz)
    mask_source: str  # "given", "found beside the input (upstream's default)", or how it was made
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step, and "total"
    intermediates: tuple[Path, ...] = ()  # kept files (keep_intermediate=True)

    def load(self) -> np.ndarray:
        """The peaks as a float32 (X, Y, Z, 9) array (NaN where sh2peaks writes NaN)."""
        return np.asarray(nib.load(self.peaks).get_fdata(dtype=np.float32))


def choose_engine(engine: str) -> str:
    """``auto`` -> ``mrtrix`` when ``dwi2fod`` is on PATH, else ``dipy``."""
    if engine not in ENGINES:
        raise InputError(f"engine {engine!r}: expected one of {', '.join(ENGINES)}")
    if engine == "auto":
        return "mrtrix" if mrtrix.available() else "dipy"
    return engine


def peaks_from_dwi(dwi: str | os.PathLike[str], bvals: str | os.PathLike[str] | None = None,
                   bvecs: str | os.PathLike[str] | None = None,
                   brain_mask: str | os.PathLike[str] | None = None, *, engine: str = "auto",
                   csd_type: str = "csd", nthreads: int | None = None,
                   workdir: str | os.PathLike[str] | None = None,
                   keep_intermediate: bool = False) -> PeaksResult:
    """Peaks (3 per voxel, MRtrix ``sh2peaks`` convention) from a DWI series; see the package docstring."""
    chosen = choose_engine(engine)
    if csd_type not in mrtrix.CSD_TYPES:
        raise InputError(f"csd_type {csd_type!r}: expected one of {', '.join(mrtrix.CSD_TYPES)}")
    if chosen == "dipy" and csd_type != "csd":
        raise InputError(f"csd_type {csd_type}: the dipy engine computes single-shell CSD only (csd); "
                         f"use engine='mrtrix' for {csd_type}")
    mask_source = "given"
    if brain_mask is None:
        brain_mask = default_brain_mask(dwi, workdir)
        mask_source = "found beside the input (upstream's default)" if brain_mask is not None else ""
    inputs = check_inputs(dwi, bvals, bvecs, brain_mask)
    if chosen == "dipy":
        from runtime.host import require_dipy

        require_dipy("diffusion")
    else:
        _check_mrtrix(inputs, csd_type, nthreads)
    out = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="tractseg-peaks-"))
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if chosen == "mrtrix":
        result = _run_mrtrix(inputs, out, csd_type, nthreads, keep_intermediate, mask_source)
    else:
        result = _run_dipy(inputs, out, nthreads, mask_source)
    result.timings["total"] = time.perf_counter() - start
    log.info("peaks: engine %s (%s), mask %s, %.1f s", result.engine, csd_type, result.mask_source,
             result.timings["total"])
    return result


def _abs(path: Path) -> str:
    return str(path.resolve())


def _check_mrtrix(inputs: DiffusionInputs, csd_type: str, nthreads: int | None) -> None:
    """Every program (and FSL for 5tt) present before anything runs."""
    mask = _abs(inputs.brain_mask) if inputs.brain_mask else "MASK"
    commands = mrtrix.fod_commands(_abs(inputs.dwi), "OUT", _abs(inputs.bvals), _abs(inputs.bvecs), mask,
                                   csd_type, nthreads)
    if inputs.brain_mask is None:
        commands.insert(0, mrtrix.mask_command(_abs(inputs.dwi), "OUT", _abs(inputs.bvals), _abs(inputs.bvecs)))
    mrtrix.check_programs(commands, csd_type, inputs.dwi)


def _run_mrtrix(inputs: DiffusionInputs, out: Path, csd_type: str, nthreads: int | None, keep: bool,
                mask_source: str) -> PeaksResult:
    staging = out / f".peaks-staging-{secrets.token_hex(6)}"
    staging.mkdir()
    timings: dict[str, float] = {}
    dwi, bvals, bvecs = _abs(inputs.dwi), _abs(inputs.bvals), _abs(inputs.bvecs)
    try:
        made_mask = inputs.brain_mask is None
        if made_mask:
            argv = mrtrix.mask_command(dwi, str(staging), bvals, bvecs, nthreads)
            started = time.perf_counter()
            mrtrix.run_command(argv, staging)
            timings["dwi2mask"] = time.perf_counter() - started
            mask = str(staging / mrtrix.MASK_NAME)
            mask_source = "MRtrix dwi2mask (upstream runs FSL bet -f 0.3, not available)"
        else:
            mask = _abs(inputs.brain_mask)
        for argv in mrtrix.fod_commands(dwi, str(staging), bvals, bvecs, mask, csd_type, nthreads):
            started = time.perf_counter()
            mrtrix.run_command(argv, staging)
            timings[argv[0]] = timings.get(argv[0], 0.0) + time.perf_counter() - started
        peaks = _move(staging / mrtrix.PEAKS_NAME, out / mrtrix.PEAKS_NAME)
        brain_mask = _move(staging / mrtrix.MASK_NAME, out / mrtrix.MASK_NAME) if made_mask else inputs.brain_mask
        kept = tuple(_move(staging / name, out / name) for name in mrtrix.INTERMEDIATES[csd_type]
                     if keep and (staging / name).exists())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PeaksResult(peaks, "mrtrix", csd_type, brain_mask, mask_source, timings, kept)


def _move(staged: Path, final: Path) -> Path:
    if not staged.is_file():
        raise mrtrix.MRtrixError(f"{staged.name}: not written by MRtrix although every command succeeded")
    with atomic_target(final) as temporary:
        os.replace(staged, temporary)
    return final


def _run_dipy(inputs: DiffusionInputs, out: Path, nthreads: int | None, mask_source: str) -> PeaksResult:
    from runtime.diffusion import dipy_engine

    given = None
    if inputs.brain_mask is not None:
        given = np.asarray(nib.load(inputs.brain_mask).dataobj).reshape(inputs.shape[:3]) > 0
    made = dipy_engine.run(inputs, given, nthreads)
    header = nib.load(inputs.dwi).header.copy()
    header.set_data_dtype(np.float32)
    header.set_slope_inter(1.0, 0.0)
    started = time.perf_counter()
    with atomic_target(out / mrtrix.PEAKS_NAME) as temporary:
        nib.Nifti1Image(made.peaks, inputs.affine, header).to_filename(temporary)
    brain_mask = inputs.brain_mask
    if given is None:
        with atomic_target(out / mrtrix.MASK_NAME) as temporary:
            nib.Nifti1Image(made.mask.astype(np.uint8), inputs.affine).to_filename(temporary)
        brain_mask = out / mrtrix.MASK_NAME
        mask_source = made.mask_source
    timings = dict(made.timings, write=time.perf_counter() - started)
    return PeaksResult(out / mrtrix.PEAKS_NAME, "dipy", "csd", brain_mask, mask_source, timings)
