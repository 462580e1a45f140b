"""Our way in: a study's long tractometry table (``OUTROOT/tractometry.csv`` as ``runtime.cohort`` writes it:
``subject,bundle,point,value``, ``point`` counted from 1, ``value`` a float's shortest round-trip text) and a
participants table (BIDS ``participants.tsv``, or any tab- or comma-separated table) holding the group or target
and the confounds.

The participants table's id column is ``participant_id`` (BIDS), else ``subject_id`` or ``subject``, else its first
column. Ids match with or without the ``sub-`` prefix (``sub-01`` and ``01`` are one subject); a participant whose
only tractometry is of one session (``sub-01_ses-1``) matches it, several sessions are refused (name the session
ids in the participants table). Every participant must have tractometry; subjects of the study table that are not
participants are left out with one note. Missing values (``n/a``, empty) are refused, naming the subject.
"""
from __future__ import annotations

import csv
from array import array
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from runtime.cohort.tractometry_table import FIELDS  # the study table's header
from runtime.errors import InputError
from runtime.tractometry_stats.inputs import (CORRELATION, GROUP, Study, check_group_sizes, check_unique,
                                              confound_column, group_column, pick_bundles, target_column)

ID_COLUMNS = ("participant_id", "subject_id", "subject")


def _key(subject: str) -> str:
    return subject[4:] if subject.startswith("sub-") else subject


def read_participants(path: str | Path) -> tuple[Path, str, dict[str, list[str]]]:
    """(path, id column, columns by name) of a tab- or comma-separated participants table."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{source}: the participants table cannot be read "
                         f"({getattr(error, 'strerror', None) or error})") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        raise InputError(f"{source}: no participants (a header line and one line per subject are needed)")
    delimiter = "\t" if source.suffix.lower() == ".tsv" or "\t" in lines[0] else ","
    rows = list(csv.reader(lines, delimiter=delimiter))
    header = [name.strip() for name in rows[0]]
    if len(set(header)) != len(header):
        raise InputError(f"{source}: a column name is used twice in the header")
    for number, row in enumerate(rows[1:], 2):
        if len(row) != len(header):
            raise InputError(f"{source}: line {number} has {len(row)} fields, the header {len(header)}")
    id_column = next((c for c in ID_COLUMNS if c in header), header[0])
    columns = {name: [row[i].strip() for row in rows[1:]] for i, name in enumerate(header)}
    check_unique(source, columns[id_column])
    return source, id_column, columns


def _read_long_table(source: Path) -> tuple[list[str], list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(subject ids, bundles, subject index, bundle index, point, value) of every line, in compact arrays."""
    subjects: dict[str, int] = {}
    bundles: dict[str, int] = {}
    s_index, b_index, points, values = array("l"), array("l"), array("l"), array("d")
    line = 1
    try:
        with open(source, encoding="utf-8", newline="") as stream:
            reader = csv.reader(stream)
            header = next(reader, None)
            if header is None or tuple(header) != FIELDS:
                raise InputError(f"{source}: not a study tractometry table (its header must be "
                                 f"{','.join(FIELDS)}, as runtime.cohort writes it)")
            for line, (subject, bundle, point, value) in enumerate(reader, 2):
                s_index.append(subjects.setdefault(subject, len(subjects)))
                b_index.append(bundles.setdefault(bundle, len(bundles)))
                points.append(int(point))
                values.append(float(value))
    except InputError:
        raise
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{source}: the study table cannot be read ({getattr(error, 'strerror', None) or error})")\
            from None
    except (ValueError, csv.Error) as error:
        why = " ".join(str(error).split())[:80]
        raise InputError(f"{source}: line {line} is not 'subject,bundle,point,value' ({why})") from None
    if not values:
        raise InputError(f"{source}: the study table holds no values")
    as_np = [np.frombuffer(a, dtype=np.dtype(a.typecode)) for a in (s_index, b_index, points, values)]
    return list(subjects), list(bundles), *as_np


def _match(participants: Path, table: Path, ids: Sequence[str], in_table: Sequence[str]) -> list[int]:
    """For each participant id, the index of its subject in the study table."""
    exact = {s: i for i, s in enumerate(in_table)}
    by_key: dict[str, list[int]] = {}
    for i, s in enumerate(in_table):
        by_key.setdefault(_key(s), []).append(i)
    found = []
    for pid in ids:
        if pid in exact:
            found.append(exact[pid])
            continue
        hits = by_key.get(_key(pid)) or [i for i, s in enumerate(in_table) if _key(s).startswith(_key(pid) + "_ses-")]
        if len(hits) > 1:
            names = ", ".join(in_table[i] for i in hits[:3])
            raise InputError(f"{participants}: participant {pid} matches {len(hits)} subjects of {table} ({names}); "
                             f"use those ids in the participants table")
        if not hits:
            raise InputError(f"{participants}: subject {pid} has no tractometry in {table}")
        found.append(hits[0])
    return found


def read_study(table: str | Path, participants: str | Path, group: str | None = None, target: str | None = None,
               confounds: Sequence[str] = (), bundles: Sequence[str] | None = None) -> Study:
    """The study of ``participants`` (``group`` or ``target`` column, ``confounds`` columns) with the profiles of
    ``table``; ``bundles`` selects (default: every bundle of the table)."""
    source, id_column, columns = read_participants(participants)
    wanted = [c for c in (group or target, *confounds)]
    for name in wanted:
        if name not in columns or name == id_column:
            raise InputError(f"{source}: no column {name!r} (its columns: "
                             f"{', '.join(c for c in columns if c != id_column)})")
    if len(set(wanted)) != len(wanted):
        raise InputError(f"{source}: column {wanted[0]!r} is both tested and a confound")
    ids = columns[id_column]
    if group:
        kind, (y, labels) = GROUP, group_column(source, group, ids, columns[group], allow_text=True)
    else:
        kind, labels = CORRELATION, ("all subjects", "")
        y = target_column(source, target, ids, columns[target])
    check_group_sizes(source, kind, y, labels)
    matrix = np.column_stack([confound_column(source, c, ids, columns[c], allow_text=True) for c in confounds] or
                             [np.empty((len(ids), 0))])
    table_path = Path(table)
    in_table, table_bundles, s_index, b_index, points, values = _read_long_table(table_path)
    rows = _match(source, table_path, ids, in_table)
    left_out = len(in_table) - len(set(rows))
    if left_out:
        print(f"note: {left_out} subject{'s' * (left_out != 1)} of {table_path} not in {source}: left out")
    chosen = pick_bundles(table_path, bundles, table_bundles)
    nr_points = int(points.max())
    if points.min() < 1:
        raise InputError(f"{table_path}: a point number below 1")
    column_of = np.full(len(in_table), -1)
    column_of[rows] = np.arange(len(rows))
    bundle_of = np.full(len(table_bundles), -1)
    bundle_of[[table_bundles.index(b) for b in chosen]] = np.arange(len(chosen))
    keep = (column_of[s_index] >= 0) & (bundle_of[b_index] >= 0)
    b, s, p = bundle_of[b_index[keep]], column_of[s_index[keep]], points[keep] - 1
    flat = (b * nr_points + p) * len(rows) + s
    counts = np.bincount(flat, minlength=len(chosen) * nr_points * len(rows)).reshape(len(chosen), nr_points, -1)
    if (counts != 1).any():
        bi, pi, si = (int(x[0]) for x in np.nonzero(counts != 1))
        how = "twice" if counts[bi, pi, si] > 1 else "missing"
        raise InputError(f"{table_path}: subject {in_table[rows[si]]}: point {pi + 1} of bundle {chosen[bi]} is "
                         f"{how} (every subject needs the same points of every analysed bundle)")
    profile = np.empty((len(chosen), nr_points, len(rows)))
    profile.reshape(-1)[flat] = values[keep]
    if not np.isfinite(profile).all():
        si = int(np.nonzero(~np.isfinite(profile).all(axis=(0, 1)))[0][0])
        raise InputError(f"{table_path}: subject {in_table[rows[si]]} has a value that is not a finite number")
    return Study(source, kind, tuple(ids), y, tuple(confounds), matrix, chosen, profile, labels)
