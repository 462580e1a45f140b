"""The study runner's chain mode (``--chain``): each subject's scalar map found with ``--scalar-pattern``, and the
subject run through :func:`runtime.chain.run_chain` with the worker's cached pipelines.

``--scalar-pattern PATTERN``: a path relative to the folder of the subject's peaks file (or absolute), with glob
wildcards (``*``, ``?``, ``[..]``, ``**``) and ``{subject}`` standing for the subject id; it must match exactly
one file, else that subject fails alone with one line (before any network runs). Examples: ``FA.nii.gz``,
``*_FA.nii.gz``, ``../anat/{subject}_FA.nii.gz``. The scalar map's path, size and mtime are kept in the subject's
done-record (``"scalar"``): a rerun redoes a subject whose pattern now finds another file or a changed one.
"""
from __future__ import annotations

import glob
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.chain import ChainOptions, ChainReport, run_chain
from runtime.cohort.records import read_done_record
from runtime.errors import InputError


def find_scalar(peaks: str | os.PathLike[str], subject: str, pattern: str) -> Path:
    """The one file ``pattern`` names for this subject (see the module docstring)."""
    folder = os.path.dirname(os.path.abspath(peaks))
    text = pattern.replace("{subject}", glob.escape(subject))
    full = text if os.path.isabs(text) else os.path.join(glob.escape(folder), text)
    matches = sorted(m for m in glob.glob(full, recursive=True) if os.path.isfile(m))
    if len(matches) != 1:
        found = "no file" if not matches else f"{len(matches)} files ({', '.join(matches[:3])})"
        raise InputError(f"{peaks}: --scalar-pattern {pattern!r} matches {found} for subject {subject} "
                         f"(looked for {full}); it must name one scalar map")
    return Path(matches[0])


def run_chain_subject(peaks: str, folder: Path, subject: str, chain: ChainOptions,
                      open_pipeline: Callable[[Any], Any]) -> ChainReport:
    """One subject's chain into ``folder`` (its scalar map found first, so a missing one fails before any work)."""
    scalar = find_scalar(peaks, subject, chain.scalar_pattern) if chain.scalar_pattern else None
    return run_chain(peaks, folder, scalar, chain, open_pipeline, subject)


def scalar_identity(scalar: str | None) -> dict[str, Any] | None:
    """What the done-record keeps of the scalar map (None: the chain ran without one)."""
    if not scalar:
        return None
    status = os.stat(scalar)
    return {"path": str(scalar), "size": status.st_size, "mtime_ns": status.st_mtime_ns}


def scalar_unchanged(folder: str, peaks: str, subject: str, chain: ChainOptions) -> bool:
    """The done subject's recorded scalar map is still the one the pattern finds, unchanged."""
    record = read_done_record(folder) or {}
    if not chain.scalar_pattern:
        return record.get("scalar") is None
    try:
        return record.get("scalar") == scalar_identity(str(find_scalar(peaks, subject, chain.scalar_pattern)))
    except (InputError, OSError):
        return False
