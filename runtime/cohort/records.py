"""Resume bookkeeping of a cohort run: per-subject done-records and the cohort table (CSV), cheap at 100,000 subjects.

A subject is done when ``OUTROOT/<subject>/.tractseg-aot-done.json`` exists and still matches (:func:`is_done`):
the input's path, size and mtime_ns (no hashing on a rerun), the bundle id, the options that shape the outputs, and
every output it lists is there. The runner removes the record (:func:`remove_done_record`) before it (re)writes a
subject's outputs and writes it LAST (:func:`write_done_record`), so a subject cut off halfway is simply redone.
Record layout (format 1, built by :func:`done_record`)::

    {"format": 1, "subject": "sub-01", "input": {"path", "size", "mtime_ns", "sha256"}, "bundle_id": "...",
     "options": {...}, "outputs": ["bundle_segmentations/AF_left.nii.gz", ...], "row": {...cohort.csv row...}}

The cohort table (:class:`CohortTable`) holds one row per subject (:data:`ROW_FIELDS`), sorted by subject id, and is
rewritten atomically at most every ``min_interval_s`` seconds, then once more by :meth:`CohortTable.flush`. A
job-array part writes its own table (:func:`table_name`); :func:`merge_tables` joins them.

Every file is written to a hidden temporary name in its folder, fsynced and moved into place with ``os.replace``.
"""
from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Iterable, Mapping
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from runtime.io.atomic import write_text_atomic
from runtime.cohort.parts import check_parts

DONE_NAME = ".tractseg-aot-done.json"
DONE_FORMAT = 1
TABLE_NAME = "cohort.csv"
PART_TABLE_GLOB = "cohort.part-*-of-*.csv"


@dataclass(frozen=True)
class CohortRow:
    """One subject's row of cohort.csv. Numbers are empty strings where a run did not get that far; ``warnings``
    holds the run's warning lines (oblique axes, ...), joined with " | "."""

    subject: str
    peaks: str
    status: str = "failed"  # done | failed
    error: str = ""
    seconds: float | str = ""
    peak_rss_mb: float | str = ""
    slices_run: int | str = ""
    worker: str = ""
    warnings: str = ""

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> CohortRow:
        """A row from a done-record or a CSV line (missing fields empty, unknown ones ignored)."""
        return cls(**{name: row.get(name, "") for name in ROW_FIELDS})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def done(self) -> bool:
        return self.status == "done"


ROW_FIELDS = tuple(f.name for f in fields(CohortRow))
RESERVED_NAMES = ("cohort.csv", "statistics.csv", "report.html", "tractometry.csv")  # OUTROOT's own files: no subject may take them


def reserved_name(name: str) -> bool:
    """Whether ``name`` is one of OUTROOT's own files (a subject folder of that name would collide)."""
    import fnmatch

    return name in RESERVED_NAMES or fnmatch.fnmatch(name, PART_TABLE_GLOB) or name.startswith(".")


@dataclass(frozen=True)
class InputIdentity:
    """What identifies an input file on a rerun: size and mtime (ns); the sha256 is recorded, never recomputed."""

    size: int
    mtime_ns: int
    sha256: str | None = None

    @classmethod
    def stat(cls, path: str | os.PathLike[str]) -> InputIdentity:
        """Size and mtime from one ``os.stat`` (follows symlinks); no hashing."""
        status = os.stat(path)
        return cls(size=status.st_size, mtime_ns=status.st_mtime_ns)


def canonical_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` as stored in a record and compared on a rerun: JSON types (tuples become lists, paths and
    other objects their ``str``), keys sorted."""
    return json.loads(json.dumps(dict(options), sort_keys=True, default=str))


def done_record(subject: str, peaks: str | os.PathLike[str], identity: InputIdentity, bundle_id: str,
                options: Mapping[str, Any], outputs: Iterable[str | os.PathLike[str]],
                row: Mapping[str, Any], timings: Mapping[str, float] | None = None) -> dict[str, Any]:
    """A format-1 done-record; ``outputs`` are paths relative to the subject's folder; ``timings`` (seconds per
    stage, as runtime.run's report gives them) are kept for reading, never compared."""
    return {
        "format": DONE_FORMAT,
        "subject": subject,
        "input": {"path": str(peaks), "size": identity.size, "mtime_ns": identity.mtime_ns,
                  "sha256": identity.sha256},
        "bundle_id": bundle_id,
        "options": canonical_options(options),
        "outputs": [Path(output).as_posix() for output in outputs],
        "row": json.loads(json.dumps(dict(row), default=str)),
        **({"timings_s": dict(timings)} if timings else {}),
    }


def write_done_record(subject_dir: str | os.PathLike[str], record: Mapping[str, Any]) -> Path:
    """Write ``record`` as ``<subject_dir>/.tractseg-aot-done.json`` atomically; call it after the outputs exist."""
    folder = Path(subject_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(folder / DONE_NAME, json.dumps(dict(record), indent=1, default=str) + "\n")


def read_done_record(subject_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The subject's done-record, or None when it is missing, unreadable or not a JSON object."""
    try:
        with open(os.path.join(subject_dir, DONE_NAME), "rb") as stream:
            record = json.loads(stream.read())
    except (OSError, ValueError):  # ValueError covers JSONDecodeError and UnicodeDecodeError
        return None
    return record if isinstance(record, dict) else None


def remove_done_record(subject_dir: str | os.PathLike[str]) -> None:
    """Forget that the subject is done (before its outputs are rewritten); no error when there is no record,
    and a directory in its place (made by hand) is removed too."""
    path = Path(subject_dir) / DONE_NAME
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _outputs_present(folder: str, outputs: Any) -> bool:
    """Every listed output exists: one directory listing per folder holding several outputs (72 masks), one
    ``lstat`` for a folder holding one or two (statistics.json, a --single_output_file image)."""
    if not isinstance(outputs, list) or not all(isinstance(output, str) and output for output in outputs):
        return False
    by_folder: dict[str, list[str]] = {}
    for output in outputs:
        parent, _, name = output.rpartition("/")
        if parent.startswith("/") or ".." in parent.split("/") or name in ("", ".", ".."):
            return False
        by_folder.setdefault(parent, []).append(name)
    for parent, names in by_folder.items():
        where = os.path.join(folder, parent) if parent else folder
        try:
            if len(names) <= 2:
                for name in names:
                    os.lstat(os.path.join(where, name))
            elif not set(names) <= set(os.listdir(where)):
                return False
        except OSError:
            return False
    return True


class DoneCheck:
    """:func:`is_done` for one study: the bundle id and the canonical options computed once (a rerun of 100,000
    subjects calls it 100,000 times)."""

    def __init__(self, bundle_id: str, options: Mapping[str, Any]) -> None:
        self.bundle_id, self.options = bundle_id, canonical_options(options)

    def __call__(self, subject_dir: str | os.PathLike[str], peaks: str | os.PathLike[str]) -> dict[str, Any] | None:
        """The stored cohort row when the subject's done-record still holds (same input path, size and
        mtime_ns, bundle id and options, every listed output present); None when the subject must be (re)done."""
        folder = os.fspath(subject_dir)
        record = read_done_record(folder)
        if record is None or record.get("format") != DONE_FORMAT or record.get("bundle_id") != self.bundle_id:
            return None
        stored_input, row = record.get("input"), record.get("row")
        if not isinstance(stored_input, dict) or not isinstance(row, dict):
            return None
        if stored_input.get("path") != os.fspath(peaks):  # the list now names another file (cp -p keeps size, mtime)
            return None
        try:
            status = os.stat(peaks)
        except OSError:
            return None
        if stored_input.get("size") != status.st_size or stored_input.get("mtime_ns") != status.st_mtime_ns:
            return None
        if record.get("options") != self.options:
            return None
        return row if _outputs_present(folder, record.get("outputs")) else None


def is_done(subject_dir: str | os.PathLike[str], peaks: str | os.PathLike[str], bundle_id: str,
            options: Mapping[str, Any]) -> dict[str, Any] | None:
    """One subject's :class:`DoneCheck`."""
    return DoneCheck(bundle_id, options)(subject_dir, peaks)


def table_name(num_parts: int = 1, part_id: int = 0) -> str:
    """``cohort.csv`` for a plain run, ``cohort.part-K-of-N.csv`` (K = part_id, from 0) for a job-array part."""
    check_parts(num_parts, part_id)
    return TABLE_NAME if num_parts == 1 else f"cohort.part-{part_id}-of-{num_parts}.csv"


def _csv_text(rows: Iterable[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(ROW_FIELDS)
    writer.writerows([row[name] for name in ROW_FIELDS] for row in rows)
    return buffer.getvalue()


class CohortTable:
    """The cohort table: one row per subject, kept in memory and written as CSV (header :data:`ROW_FIELDS`, rows
    sorted by subject id) atomically at most every ``min_interval_s`` seconds; :meth:`flush` writes at once.

    A write is O(number of subjects); the throttle keeps a 100,000-subject run from rewriting the file per subject.
    """

    def __init__(self, path: str | os.PathLike[str], min_interval_s: float = 2.0) -> None:
        self.path = Path(path)
        self.min_interval_s = float(min_interval_s)
        self._rows: dict[str, dict[str, Any]] = {}
        self._last_write: float | None = None
        self.writes = 0

    def update(self, row: CohortRow | Mapping[str, Any], write: bool = True) -> None:
        """Record (or replace) the row of ``row["subject"]``; write the table when the last write is old enough
        (never with ``write=False``: a rerun records its done subjects, then writes once). Missing fields are
        left empty; a field not in :data:`ROW_FIELDS` is a ValueError."""
        if isinstance(row, CohortRow):
            row = row.as_dict()
        unknown = sorted(set(row) - set(ROW_FIELDS))
        if unknown:
            raise ValueError(f"{self.path}: unknown cohort table field(s): {', '.join(unknown)}")
        subject = row.get("subject")
        if not isinstance(subject, str) or not subject:
            raise ValueError(f"{self.path}: a cohort table row needs a subject (got {subject!r})")
        self._rows[subject] = {field: row.get(field, "") for field in ROW_FIELDS}
        now = time.monotonic()
        if write and (self._last_write is None or now - self._last_write >= self.min_interval_s):
            self.flush()

    def flush(self) -> Path:
        """Write the table now (header only when there is no row yet); OutputError naming the table when it
        cannot be written (a full disk, a directory in its place)."""
        from runtime.errors import OutputError

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.path, _csv_text(self.rows()))
        except OSError as error:
            raise OutputError(f"{self.path}: the cohort table cannot be written ({error.strerror or error}); the "
                              "subjects' outputs and done-records are in place, a rerun rewrites the table") from None
        self._last_write = time.monotonic()
        self.writes += 1
        return self.path

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self) -> list[dict[str, Any]]:
        """The rows, sorted by subject id."""
        return [self._rows[subject] for subject in sorted(self._rows)]


def read_cohort_table(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of a cohort table (values as text, absent columns empty); ValueError naming the file when it
    cannot be read or has no ``subject`` column."""
    source = Path(path)
    try:
        with open(source, encoding="utf-8", newline="") as stream:
            reader = csv.DictReader(stream)
            if reader.fieldnames is None or "subject" not in reader.fieldnames:
                raise ValueError(f"{source}: not a cohort table (no 'subject' column in the header)")
            return [{field: row.get(field) or "" for field in ROW_FIELDS} for row in reader]
    except OSError as error:
        raise ValueError(f"{source}: cannot read cohort table: {error.strerror or error}") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{source}: malformed cohort table: {error}") from None


def merge_tables(paths: Iterable[str | os.PathLike[str]]) -> list[dict[str, str]]:
    """The rows of several tables (the parts of a job array) as one, sorted by subject id; a subject found in
    more than one table keeps the row from the later path."""
    merged: dict[str, dict[str, str]] = {}
    for path in paths:
        for row in read_cohort_table(path):
            merged[row["subject"]] = row
    return [merged[subject] for subject in sorted(merged)]
