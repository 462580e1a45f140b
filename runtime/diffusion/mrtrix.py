"""The ``mrtrix`` engine: upstream's exact MRtrix commands, run in a staging folder.

Mirrors (TractSeg 2.10, ``libs/preprocessing.py``):

| here | upstream |
|---|---|
| :func:`fod_commands` | ``create_fods``: the same programs, arguments, argument order, ``-quiet`` flags and ``-nthreads N`` (only when N > 0) for ``csd``, ``csd_msmt`` (the doubled ``-mask`` of ``dwi2response dhollander`` included) and ``csd_msmt_5tt`` |
| :func:`mask_command` | ``create_brain_mask`` runs FSL ``bet <b0> nodif_brain_mask -f 0.3 -g 0 -m``; FSL is not installable here, so MRtrix's ``dwi2mask`` (its own DWI brain mask, from the b0s and the mean DWI) writes ``nodif_brain_mask.nii.gz`` instead: a different algorithm, said in the result's ``mask_source`` |
| :data:`INTERMEDIATES` | ``clean_up``: the files it deletes unless ``--keep_intermediate_files`` (the mask and peaks are kept) |

Upstream calls ``os.system`` and never looks at the exit status, so a failing command leaves a missing or stale
``peaks.nii.gz``. Here each command runs with ``subprocess`` (no shell) with the staging folder as its working
directory (MRtrix's Python scripts put their ``*-tmp-*`` folders there); a missing program or a non-zero exit is
one :class:`MRtrixError` line naming the command and the tail of its stderr, and the staging folder is removed,
so nothing half-written is left.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from runtime.errors import BackendError, InputError, one_line

CSD_TYPES = ("csd", "csd_msmt", "csd_msmt_5tt")
T1_NAME = "T1w_acpc_dc_restore_brain.nii.gz"  # csd_msmt_5tt's T1, beside the DWI (create_fods)
MASK_NAME = "nodif_brain_mask.nii.gz"
PEAKS_NAME = "peaks.nii.gz"
INTERMEDIATES = {
    "csd": ("WM_FODs.nii.gz", "response.txt"),
    "csd_msmt": ("WM_FODs.nii.gz", "RF_WM.txt", "RF_GM.txt", "RF_CSF.txt", "GM_FODs.nii.gz", "CSF_FODs.nii.gz"),
    "csd_msmt_5tt": ("WM_FODs.nii.gz", "5TT.nii.gz", "RF_WM.txt", "RF_GM.txt", "RF_CSF.txt", "RF_voxels.nii.gz",
                     "GM.nii.gz", "CSF.nii.gz"),
}
FSL_PROGRAMS = ("fast", "run_first_all")  # what MRtrix 3.0.3's `5ttgen fsl -premasked` runs (with FSLDIR set)


class MRtrixError(BackendError):
    """An MRtrix (or FSL) program that is missing or fails; one line naming it and its stderr tail."""


def threads_option(nthreads: int | None) -> list[str]:
    """``create_fods``: ``" -nthreads " + str(nr_cpus)`` only when nr_cpus > 0."""
    return ["-nthreads", str(nthreads)] if nthreads is not None and nthreads > 0 else []


def fod_commands(dwi: str, out: str, bvals: str, bvecs: str, mask: str, csd_type: str,
                 nthreads: int | None = None) -> list[list[str]]:
    """The argv of each command ``create_fods`` runs, ``out`` standing for its ``output_dir``."""
    t = threads_option(nthreads)
    grad = ["-fslgrad", bvecs, bvals]
    o = f"{out}/"
    peaks = ["sh2peaks", o + "WM_FODs.nii.gz", o + PEAKS_NAME, "-quiet", *t]
    if csd_type == "csd":
        return [["dwi2response", "tournier", dwi, o + "response.txt", "-mask", mask, *grad, "-quiet", *t],
                ["dwi2fod", "csd", dwi, o + "response.txt", o + "WM_FODs.nii.gz", "-mask", mask, *grad, "-quiet", *t],
                peaks]
    if csd_type == "csd_msmt":
        return [["dwi2response", "dhollander", "-mask", mask, dwi, o + "RF_WM.txt", o + "RF_GM.txt", o + "RF_CSF.txt",
                 *grad, "-mask", mask, *t],
                ["dwi2fod", "msmt_csd", dwi, o + "RF_WM.txt", o + "WM_FODs.nii.gz", o + "RF_GM.txt",
                 o + "GM_FODs.nii.gz", o + "RF_CSF.txt", o + "CSF_FODs.nii.gz", *grad, "-mask", mask, *t],
                peaks]
    if csd_type == "csd_msmt_5tt":
        t1 = str(Path(dwi).parent / T1_NAME)
        return [["5ttgen", "fsl", t1, o + "5TT.nii.gz", "-premasked", *t],
                ["dwi2response", "msmt_5tt", dwi, o + "5TT.nii.gz", o + "RF_WM.txt", o + "RF_GM.txt",
                 o + "RF_CSF.txt", "-voxels", o + "RF_voxels.nii.gz", *grad, "-mask", mask, *t],
                ["dwi2fod", "msmt_csd", dwi, o + "RF_WM.txt", o + "WM_FODs.nii.gz", o + "RF_GM.txt", o + "GM.nii.gz",
                 o + "RF_CSF.txt", o + "CSF.nii.gz", "-mask", mask, *grad, *t],
                peaks]
    raise InputError(f"csd_type {csd_type!r}: expected one of {', '.join(CSD_TYPES)}")


def mask_command(dwi: str, out: str, bvals: str, bvecs: str, nthreads: int | None = None) -> list[str]:
    """Our stand-in for ``create_brain_mask`` (FSL bet): ``dwi2mask`` writing ``nodif_brain_mask.nii.gz``."""
    return ["dwi2mask", dwi, f"{out}/{MASK_NAME}", "-fslgrad", bvecs, bvals, "-quiet", *threads_option(nthreads)]


def available() -> bool:
    """MRtrix is usable when ``dwi2fod`` is on PATH (the ``auto`` engine's test)."""
    return shutil.which("dwi2fod") is not None


def check_programs(commands: list[list[str]], csd_type: str, dwi: Path) -> None:
    """Before any command runs: every program on PATH, and csd_msmt_5tt's T1 and FSL present."""
    for argv in commands:
        if shutil.which(argv[0]) is None:
            raise MRtrixError(f"{argv[0]}: not found on PATH; the mrtrix engine needs MRtrix 3 "
                              f"(apt-get install mrtrix3) or use engine='dipy'")
    if csd_type == "csd_msmt_5tt":
        t1 = dwi.parent / T1_NAME
        if not t1.is_file():
            raise InputError(f"{t1}: not found; csd_msmt_5tt needs the T1 (brain-extracted) beside the DWI")
        missing = [p for p in FSL_PROGRAMS if shutil.which(p) is None]
        unset = not os.environ.get("FSLDIR")
        if unset or missing:
            what = [f"{', '.join(missing)} not found on PATH"] if missing else []
            what += ["FSLDIR is not set"] if unset else []
            raise MRtrixError(f"5ttgen fsl: csd_msmt_5tt needs FSL ({'; '.join(what)}); use csd_type csd or "
                              f"csd_msmt")


def run_command(argv: list[str], cwd: Path) -> None:
    """Run one command; a non-zero exit is one MRtrixError line with its stderr tail."""
    try:
        done = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, errors="replace", check=False)
    except OSError as error:
        raise MRtrixError(f"{argv[0]}: could not start ({one_line(error, 160)})") from None
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if "[ERROR]" in line]  # MRtrix scripts end with scratch-folder notes
        tail = " | ".join(line[:200] for line in (errors[:3] if errors else lines[-3:]))
        raise MRtrixError(f"{' '.join(argv[:2])}: failed with status {done.returncode}: {tail or 'no output'}")
