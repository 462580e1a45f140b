"""Peaks from raw diffusion data (upstream's ``--raw_diffusion_input``), by MRtrix or by dipy.

The API::

    peaks_from_dwi(dwi, bvals=None, bvecs=None, brain_mask=None, *, engine="auto", csd_type="csd",
                   nthreads=None, workdir=None, keep_intermediate=False) -> PeaksResult

- ``dwi``: a 4D NIfTI diffusion series. ``bvals``/``bvecs``: FSL text files; default upstream's
  ``<dwi dir>/<dwi name up to its first dot>.bvals`` / ``.bvecs`` (``exp_utils.get_bvals_bvecs_path``).
- ``brain_mask``: default upstream's ``nodif_brain_mask.nii.gz`` in ``workdir``, then beside the DWI
  (``exp_utils.get_brain_mask_path``); when none exists the engine makes one (mrtrix: ``dwi2mask``; dipy:
  ``median_otsu``; upstream's FSL ``bet`` is not available) and keeps it as ``<workdir>/nodif_brain_mask.nii.gz``.
- ``engine``: ``"mrtrix"`` (upstream's exact commands, :mod:`runtime.diffusion.mrtrix`), ``"dipy"`` (pure
  Python, the ``diffusion`` extra, :mod:`runtime.diffusion.dipy_engine`), ``"auto"`` (mrtrix when ``dwi2fod`` is on
  PATH, else dipy). ``csd_type``: ``"csd"`` | ``"csd_msmt"`` | ``"csd_msmt_5tt"`` (the last two mrtrix only; 5tt
  needs FSL and ``T1w_acpc_dc_restore_brain.nii.gz`` beside the DWI). ``nthreads``: ``-nthreads N`` for MRtrix
  (omitted when None, as upstream with ``--nr_cpus -1``), worker processes for dipy (None: every core).
- ``workdir``: where ``peaks.nii.gz`` (upstream's name) is written, atomically (None: a new temporary folder the
  caller owns). MRtrix runs in a staging folder inside it, removed on success and failure; its intermediates
  (upstream's ``clean_up`` list) are moved beside the peaks only with ``keep_intermediate``.

Returns :class:`PeaksResult` (``peaks`` path, ``load()`` -> float32 array, ``engine`` that ran, ``csd_type``,
``brain_mask``, ``mask_source``, ``timings`` in seconds, ``intermediates``). Raises, before any work and with
nothing written, :class:`~runtime.errors.InputError` (one line naming the file) for bad inputs
(:func:`check_inputs`), :class:`~runtime.errors.MissingExtraError` when dipy is needed and missing, and
:class:`MRtrixError` (a ``BackendError``) for a missing MRtrix/FSL program; a failing MRtrix command is an
``MRtrixError`` naming it with its stderr tail, after its staging folder is removed.

Output convention (both engines; what MRtrix 3.0.3's ``sh2peaks`` writes): channel ``3k..3k+2`` = amplitude of
peak k times its unit direction in world (scanner, RAS+) coordinates, peaks sorted by amplitude, NaN for a missing
peak and outside the mask. The runtime's reader turns NaN into 0 as upstream does (``np.nan_to_num``). A peak's
sign is arbitrary: ``sh2peaks`` writes whichever copy its seeded Newton search reached first, the dipy engine the
z >= 0 copy, so on the same FOD the engines' peaks can point opposite ways (19% of first peaks on the 2.5 mm
HCP-like DWI of benchmarks/README.md, where the directions otherwise agree within 0.14 degrees).
"""
from runtime.diffusion.api import ENGINES, PeaksResult, choose_engine, peaks_from_dwi
from runtime.diffusion.inputs import (B0_THRESHOLD, UNIT_TOLERANCE, DiffusionInputs, check_inputs,
                                      default_brain_mask, default_gradient_paths)
from runtime.diffusion.mrtrix import CSD_TYPES, MRtrixError

__all__ = ["B0_THRESHOLD", "CSD_TYPES", "ENGINES", "UNIT_TOLERANCE", "DiffusionInputs", "MRtrixError",
           "PeaksResult", "check_inputs", "choose_engine", "default_brain_mask", "default_gradient_paths",
           "peaks_from_dwi"]
