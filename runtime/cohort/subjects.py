"""Which subjects a cohort run covers: peaks files found from the command line, one safe, unique id per subject.

INPUT items are peaks files (taken as given, whatever their name) and directories (searched with a glob pattern,
default ``**/*peaks*.nii.gz``, with :meth:`pathlib.Path.glob` semantics; matches under a hidden name, such as
macOS ``._x_peaks.nii.gz`` files or ``.snapshot/`` folders, are skipped). ``--list FILE`` adds more: either one
path per line (file or directory, like an INPUT item) or a CSV whose header has ``subject`` and ``peaks`` columns,
which also sets the ids. In both, blank lines and lines starting with ``#`` are ignored and relative paths are
relative to the list file's folder.

Ids (:func:`subject_id`) come from the path: the BIDS ``sub-XX`` component, as ``sub-XX_ses-YY`` when a ``ses-YY``
component (or file-name entity) is present; otherwise the parent folder when the file name says nothing more
than "peaks" (folders named ``tractseg_output``, ``dwi``, ``Diffusion``, ``T1w`` or ``peaks`` are passed over, so
upstream TractSeg's ``<subject>/tractseg_output/peaks.nii.gz`` and HCP's ``<subject>/T1w/Diffusion/peaks.nii.gz``
give the subject); otherwise the file name without ``.nii.gz``/``.nii``. Every id is made a safe folder name
(:func:`safe_id`). The same file reached twice (same resolved path) counts once, the first id it got wins; two
different files with one id are refused before anything runs.

Every problem raises :class:`CohortInputError` with one line naming the offending path.
"""
from __future__ import annotations

import csv
import fnmatch
import glob
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime.io.nifti_io import strip_nifti

DEFAULT_PATTERN = "**/*peaks*.nii.gz"
# Folders that say nothing about whose data they hold: passed over when the id comes from the parent folder.
GENERIC_DIRS = frozenset({"tractseg_output", "dwi", "diffusion", "t1w", "peaks"})
MAX_ID_LENGTH = 128

_BIDS_LABEL = r"[A-Za-z0-9]+"
_SUB_DIR = re.compile(rf"sub-{_BIDS_LABEL}")
_SES_DIR = re.compile(rf"ses-{_BIDS_LABEL}")
_GENERIC_STEM = re.compile(r"[._-]*(peaks)?[._-]*", re.IGNORECASE)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class CohortInputError(ValueError):
    """The cohort's inputs cannot be used as given; the message is one line naming the offending path."""


@dataclass(frozen=True)
class Subject:
    """One subject: its id (a safe folder name, unique in the cohort) and its peaks file (absolute path)."""

    id: str
    peaks: Path
    gradients: tuple[str | None, str | None, str | None] | None = None  # a DWI's bvals, bvecs, mask (BIDS)
    problem: str | None = None  # known before the run (a BIDS series without .bval): the subject fails with it


def safe_id(raw: str) -> str:
    """``raw`` as a safe folder name: characters outside ``[A-Za-z0-9._-]`` and leading dots become ``_``; an
    empty name is ``_``; a name over 128 characters is cut and ends with 16 hex digits of its sha256."""
    safe = _UNSAFE.sub("_", raw)
    stripped = safe.lstrip(".")
    safe = "_" * (len(safe) - len(stripped)) + stripped or "_"
    if len(safe) > MAX_ID_LENGTH:
        digest = hashlib.sha256(raw.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        safe = f"{safe[: MAX_ID_LENGTH - 17]}-{digest}"
    return safe


def _file_entities(stem: str) -> dict[str, str]:
    """BIDS key-value entities of a file name that starts with ``sub-<label>`` (else none)."""
    entities: dict[str, str] = {}
    for part in stem.split("_"):
        key, sep, value = part.partition("-")
        if sep and re.fullmatch(_BIDS_LABEL, value) and key not in entities:
            entities[key] = value
    return entities if stem.startswith("sub-") and "sub" in entities else {}


def subject_id(path: str | os.PathLike[str]) -> str:
    """The id a peaks file gets from its path (see the module docstring), already made safe."""
    absolute = os.path.abspath(path).split(os.sep)  # strings: Path objects cost 100,000 subjects seconds
    folders = (os.sep, *absolute[1:-1])  # as Path.parts: the root, then each folder
    stem = strip_nifti(absolute[-1])
    entities = _file_entities(stem)
    sub_index = next((i for i in range(len(folders) - 1, -1, -1) if _SUB_DIR.fullmatch(folders[i])), None)
    if sub_index is not None:
        sub = folders[sub_index]
        ses = next((f for f in folders[sub_index + 1:] if _SES_DIR.fullmatch(f)), None)
    else:
        sub = f"sub-{entities['sub']}" if entities else None
        ses = None
    if sub is not None:
        if ses is None and "ses" in entities:
            ses = f"ses-{entities['ses']}"
        return safe_id(f"{sub}_{ses}" if ses else sub)
    if _GENERIC_STEM.fullmatch(stem):
        named = [f for f in folders[1:] if f.lower() not in GENERIC_DIRS]
        return safe_id(named[-1] if named else stem)
    return safe_id(stem)


def _under(path: Path, roots: Sequence[Path]) -> bool:
    text = str(path)
    return any(text == str(root) or text.startswith(os.path.join(str(root), "")) for root in roots)


class _RealPaths:
    """``os.path.realpath`` for many files: every folder is resolved once and remembered, so each further path
    costs one ``lstat`` (is it a link?) per component not seen before; 100,000 subjects cost about 100,000
    ``lstat`` calls rather than one per component of every path."""

    def __init__(self) -> None:
        self._real: dict[str, str] = {}

    def _resolve(self, path: str) -> str:
        known = self._real.get(path)
        if known is not None:
            return known
        parent, name = os.path.split(path)
        if not name or parent == path:
            real = path
        else:
            candidate = os.path.join(self._resolve(parent), name)
            real = os.path.realpath(candidate) if os.path.islink(candidate) else candidate
        self._real[path] = real
        return real

    def known(self, path: str, real: str) -> None:
        """Remember what a folder search already knows (``path`` is ``real``), sparing the ``lstat``."""
        self._real[path] = real

    def get(self, path: str) -> str | None:
        return self._real.get(path)

    def __call__(self, path: Path) -> str:
        known = self._real.get(os.fspath(path))
        if known is not None:
            return known
        folder, name = os.path.split(os.path.abspath(path))
        candidate = os.path.join(self._resolve(folder), name)
        return os.path.realpath(candidate) if os.path.islink(candidate) else candidate


def _any_depth(root: str, pattern: str, exclude: Sequence[str], realpaths: _RealPaths | None = None
               ) -> list[str] | None:
    """``glob(pattern, recursive=True)`` for the common pattern ``**/NAME`` (NAME without ``/``): one
    ``os.scandir`` per folder (glob lists each folder twice), links to folders followed once each, hidden names
    skipped; files, and links whose target is missing, that match NAME. None for any other pattern."""
    if not pattern.startswith("**/") or "/" in pattern[3:] or "**" in pattern[3:] or pattern[3:].startswith("."):
        return None
    match = re.compile(fnmatch.translate(pattern[3:])).match
    skip = {os.path.join(e, "") for e in exclude}
    realpaths = realpaths or _RealPaths()
    real_root = os.path.realpath(root)
    realpaths.known(root, real_root)
    found, stack, visited = [], [root], {real_root}
    while stack:
        folder = stack.pop()
        real_folder = realpaths.get(folder) or os.path.realpath(folder)
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue  # unreadable or vanished: glob passes over it too
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                if os.path.join(entry.path, "") in skip:
                    continue
                if entry.is_symlink():
                    real = os.path.realpath(entry.path)
                    if real in visited:
                        continue
                    visited.add(real)
                else:
                    real = os.path.join(real_folder, entry.name)
                realpaths.known(entry.path, real)
                stack.append(entry.path)
            elif match(entry.name) and (entry.is_file() or (entry.is_symlink() and not os.path.exists(entry.path))):
                found.append(entry.path)
                realpaths.known(entry.path, os.path.realpath(entry.path) if entry.is_symlink()
                                else os.path.join(real_folder, entry.name))
    return found


def _expand(item: str | os.PathLike[str], pattern: str, where: str = "", exclude: Sequence[Path] = (),
            realpaths: _RealPaths | None = None) -> list[Path]:
    """The peaks files an INPUT item stands for: itself, or the sorted matches under a directory. The search
    follows symbolic links to folders (a study of linked subject folders is whole) and keeps a matching link
    whose target is missing (a DataLad/git-annex file before ``get``): it becomes a subject that fails, naming
    the link, rather than one silently left out. Matches under ``exclude`` (the study's own output root) and
    under hidden names are skipped."""
    path = Path(os.path.abspath(Path(item).expanduser()))
    if path.is_file() or (path.is_symlink() and not path.exists()):
        return [path]
    if not path.exists():
        raise CohortInputError(f"{where}{path}: no such file or directory")
    if not path.is_dir():
        raise CohortInputError(f"{where}{path}: not a file or directory")
    try:
        matches = _any_depth(str(path), pattern, [str(e) for e in exclude], realpaths)
        if matches is None:  # ** follows links to folders; no hidden names
            matches = [m for m in (os.path.join(path, m) for m in glob.glob(pattern, root_dir=path, recursive=True))
                       if (os.path.isfile(m) or (os.path.islink(m) and not os.path.exists(m)))
                       and not _under(Path(m), exclude)]
    except (OSError, ValueError, NotImplementedError, re.error) as error:
        raise CohortInputError(f"{where}{path}: cannot search with pattern {pattern!r}: {error}") from None
    found = [Path(m) for m in sorted(matches)]
    if not found:
        raise CohortInputError(f"{where}{path}: no file matches {pattern!r}")
    return found


def read_list(list_file: str | os.PathLike[str], pattern: str = DEFAULT_PATTERN,
              exclude: Sequence[Path] = ()) -> list[tuple[str | None, Path]]:
    """The entries of a ``--list`` file as (id or None, absolute peaks path), in file order."""
    source = Path(list_file)
    try:
        text = source.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise CohortInputError(f"{source}: list file is not UTF-8 text") from None
    except OSError as error:
        raise CohortInputError(f"{source}: cannot read list file: {error.strerror or error}") from None
    base = Path(os.path.abspath(source)).parent
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise CohortInputError(f"{source}: list file names no path")
    header = [name.strip().lower() for name in next(csv.reader([lines[0][1]]))]
    if "subject" not in header or "peaks" not in header:
        return [(None, found) for number, line in lines
                for found in _expand(base / Path(line).expanduser(), pattern, f"{source}:{number}: ", exclude)]
    id_column, peaks_column = header.index("subject"), header.index("peaks")
    entries: list[tuple[str | None, Path]] = []
    for number, line in lines[1:]:
        row = next(csv.reader([line]))
        if len(row) <= max(id_column, peaks_column):
            raise CohortInputError(f"{source}:{number}: fewer columns than the header (subject, peaks)")
        raw_id, raw_peaks = row[id_column].strip(), row[peaks_column].strip()
        if not raw_id or not raw_peaks:
            raise CohortInputError(f"{source}:{number}: empty subject or peaks")
        peaks = Path(os.path.abspath(base / Path(raw_peaks).expanduser()))
        if not peaks.is_file() and not (peaks.is_symlink() and not peaks.exists()):  # dangling: fails later
            what = "is a directory, not a peaks file" if peaks.is_dir() else "no such file"
            raise CohortInputError(f"{source}:{number}: {peaks}: {what}")
        entries.append((raw_id, peaks))
    if not entries:
        raise CohortInputError(f"{source}: CSV list file has a header and no subject")
    return entries


def _assign(entries: Iterable[tuple[str | None, Path]], realpath: _RealPaths | None = None) -> list[Subject]:
    by_id: dict[str, Path] = {}
    seen: set[str] = set()
    realpath = realpath or _RealPaths()
    for explicit, path in entries:
        real = realpath(path)
        if real in seen:
            continue
        seen.add(real)
        sid = safe_id(explicit) if explicit is not None else subject_id(path)
        if sid in by_id:
            hint = "the --list CSV gives it twice" if explicit is not None else \
                "give ids with a --list CSV of subject,peaks"
            raise CohortInputError(f"subject id {sid!r} from two files: {by_id[sid]} and {path} ({hint})")
        by_id[sid] = path
    return [Subject(sid, by_id[sid]) for sid in sorted(by_id)]


def discover(inputs: Sequence[str | os.PathLike[str]], pattern: str = DEFAULT_PATTERN,
             list_file: str | os.PathLike[str] | None = None,
             exclude: str | os.PathLike[str] | None = None) -> list[Subject]:
    """Every subject named by ``inputs`` (peaks files, directories) and ``list_file``, sorted by id. Folder
    searches skip ``exclude`` (the study's output root: a rerun must not take its own outputs as inputs)."""
    skip = [Path(os.path.abspath(exclude)), Path(os.path.realpath(exclude))] if exclude is not None else []
    if isinstance(inputs, (str, bytes, os.PathLike)):
        raise TypeError("inputs must be a sequence of paths, not one path")
    if not inputs and list_file is None:
        raise CohortInputError("no input: give peaks files, directories or --list FILE")
    realpaths = _RealPaths()
    entries: list[tuple[str | None, Path]] = [(None, path) for item in inputs
                                              for path in _expand(item, pattern, exclude=skip, realpaths=realpaths)]
    if list_file is not None:
        entries.extend(read_list(list_file, pattern, skip))
    return _assign(entries, realpaths)
