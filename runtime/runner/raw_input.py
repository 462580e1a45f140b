"""``--raw_diffusion_input``: the peaks made from a DWI series (:mod:`runtime.diffusion`) before the usual subject
run, as upstream's ``TractSeg -i Diffusion.nii.gz --raw_diffusion_input`` does.

The peaks are computed in a hidden work folder beside the outputs (``<outdir>/.tractseg-aot-peaks-<token>/``,
removed at the end whatever happens); ``peaks.nii.gz`` (upstream keeps it in the output folder), the brain mask
an engine made (``nodif_brain_mask.nii.gz``) and, with ``--keep_intermediate_files``, the intermediates are
committed together with the segmentation (:func:`runtime.runner.subject.run_subject`), so a failure leaves nothing.
"""
from __future__ import annotations

import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from runtime.diffusion import peaks_from_dwi
from runtime.io.nifti_io import PEAKS_FILE
from runtime.options import RawInputOptions
log = logging.getLogger("tractseg_aot")


@dataclass(frozen=True)
class RawPeaks:
    """Peaks made from a DWI: where they are now, the engine that made them, and the files to commit with the
    outputs as (final path, current path)."""

    peaks: Path
    engine: str
    carried: tuple[tuple[Path, Path], ...]
    timings: dict[str, float]  # seconds per engine step, and "total" (PeaksResult.timings)


@contextmanager
def peaks_from_raw(dwi: str | os.PathLike[str], outdir: Path, options: RawInputOptions,
                   threads: int | None = None) -> Iterator[RawPeaks]:
    """Make the peaks of ``dwi`` (every input check first: :func:`runtime.diffusion.check_inputs`); the work
    folder lives for the block, named by its absolute path: the mrtrix engine runs its commands inside a staging
    folder of its own, where a relative path would be read twice (``out/.../out/...``)."""
    parent = next((p for p in (outdir, *outdir.parents) if p.is_dir()), Path(".")).resolve()
    work = parent / f".tractseg-aot-peaks-{secrets.token_hex(6)}"
    work.mkdir()
    log.info("computing the peaks of %s (%s engine, %s): a minute or more; at HCP size many minutes", dwi,
             options.peaks_engine, options.csd_type)
    try:
        result = peaks_from_dwi(dwi, options.bvals, options.bvecs, options.brain_mask, engine=options.peaks_engine,
                                csd_type=options.csd_type, nthreads=threads, workdir=work,
                                keep_intermediate=options.keep_intermediate_files)
        log.info("peaks from %s: %s engine (%s), brain mask %s", dwi, result.engine, result.csd_type,
                 result.mask_source)
        carried = [(outdir / PEAKS_FILE, result.peaks)]
        if result.brain_mask is not None and Path(result.brain_mask).parent == work:  # made, not given
            carried.append((outdir / Path(result.brain_mask).name, Path(result.brain_mask)))
        carried += [(outdir / p.name, p) for p in result.intermediates]
        yield RawPeaks(result.peaks, result.engine, tuple(carried),
                       {k: round(v, 3) for k, v in result.timings.items()})
    finally:
        shutil.rmtree(work, ignore_errors=True)

