"""Upstream's way in: the subjects file of TractSeg 2.10's ``plot_tractometry_results``.

Format (as upstream reads it)::

    # tractometry_path=/data/SUBJECT_ID/Tractometry.csv
    # bundles=CST_right CST_left AF_left          (optional: upstream's bundle names, space-separated)
    # plot_3D=/data/s01/tractseg_output           (optional; only for --plot3D, which needs VTK)
    subject_id group Age Sex
    s01 0 24 0
    s02 1 31 1

The ``# bundles=`` and ``# plot_3D=`` lines are looked for on the second and third line only, as upstream does;
other lines starting with ``#`` are comments. The table's columns are separated by spaces: ``subject_id``, then
``group`` (0/1) or ``target`` (a number), then any confounds; every column but the first must hold numbers, and
``group`` only 0 and 1 (upstream's checks). Each subject's CSV is ``tractometry_path`` with ``SUBJECT_ID``
replaced by its id (relative paths are relative to the working folder, as upstream), in upstream's Tractometry
layout (``A;B;...`` header, one line per point). Bundles are taken by name from each CSV's header (upstream took
them by column position).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from runtime.errors import InputError
from runtime.tractometry.table import TRACTOMETRY_BUNDLES, read_csv
from runtime.tractometry_stats.inputs import (CORRELATION, GROUP, Study, check_group_sizes, check_unique,
                                              group_column, numeric_column, pick_bundles, target_column)

PATH_LINE, BUNDLES_LINE, PLOT_3D_LINE = "# tractometry_path=", "# bundles=", "# plot_3D="
PLACEHOLDER = "SUBJECT_ID"


def _header(source: Path, lines: list[str]) -> tuple[str, list[str] | None, str | None]:
    """(tractometry_path, bundles or None, plot_3D path or None) from the first three lines."""
    first = lines[0].strip() if lines else ""
    if not first.startswith(PATH_LINE):
        raise InputError(f"{source}: invalid first line in subjects file; it must start with '{PATH_LINE}'")
    base = first[len(PATH_LINE):].strip()
    if PLACEHOLDER not in base:
        raise InputError(f"{source}: the tractometry_path {base!r} does not contain {PLACEHOLDER}, so every subject "
                         f"would read the same file")
    bundles, plot_3d = None, None
    for line in lines[1:3]:
        line = line.strip()
        if line.startswith(BUNDLES_LINE):
            bundles = line[len(BUNDLES_LINE):].split()
            for bundle in bundles:
                if bundle not in TRACTOMETRY_BUNDLES:
                    raise InputError(f"{source}: invalid bundle name: {bundle}")
            print(f"Using {len(bundles)} manually specified bundles.")
        elif line.startswith(PLOT_3D_LINE):
            plot_3d = line[len(PLOT_3D_LINE):].strip()
    return base, bundles, plot_3d


def _table(source: Path, lines: list[str]) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the space-separated table (``#`` starts a comment, as pandas' ``comment="#"``)."""
    rows = [fields for fields in (line.split("#", 1)[0].split() for line in lines) if fields]
    if not rows:
        raise InputError(f"{source}: no table (a 'subject_id group|target ...' header and one line per subject)")
    header, body = rows[0], rows[1:]
    if header[0] != "subject_id" or len(header) < 2:
        raise InputError(f"{source}: the table's header must start with 'subject_id' and 'group' or 'target', "
                         f"got {' '.join(header[:3])!r}")
    if header[1] not in (GROUP, "target"):
        raise InputError(f"{source}: invalid second column header {header[1]!r} (only 'group' or 'target' allowed)")
    if len(set(header)) != len(header):
        raise InputError(f"{source}: a column name is used twice in the header")
    for fields in body:
        if len(fields) != len(header):
            raise InputError(f"{source}: the line of subject {fields[0]} has {len(fields)} fields, the header "
                             f"{len(header)}")
    if not body:
        raise InputError(f"{source}: the table lists no subjects")
    return header, body


def read_subjects_file(path: str | Path, bundles: Sequence[str] | None = None,
                       confounds: Sequence[str] | None = None) -> tuple[Study, str | None]:
    """The study a subjects file describes, and its ``# plot_3D=`` path (None when absent). ``bundles`` and
    ``confounds`` (ours) narrow the file's own selection (default: its ``# bundles=`` line, else every bundle of
    the CSVs; every column after the second)."""
    source = Path(path)
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{source}: the subjects file cannot be read ({getattr(error, 'strerror', None) or error})")\
            from None
    base, file_bundles, plot_3d = _header(source, lines)
    header, body = _table(source, lines)
    subjects = [fields[0] for fields in body]
    check_unique(source, subjects)
    columns = {name: [fields[i] for fields in body] for i, name in enumerate(header)}
    for name in header[1:]:  # upstream: every column but the first must be numeric
        numeric_column(source, name, subjects, columns[name])
    if header[1] == GROUP:
        kind = GROUP
        y, labels = group_column(source, GROUP, subjects, columns[GROUP], allow_text=False)
    else:
        kind, labels = CORRELATION, ("all subjects", "")
        y = target_column(source, "target", subjects, columns["target"])
    check_group_sizes(source, kind, y, labels)
    names = list(header[2:]) if confounds is None else list(confounds)
    for name in names:
        if name not in header[2:]:
            raise InputError(f"{source}: no confound column {name!r} (its confounds: "
                             f"{', '.join(header[2:]) or 'none'})")
    matrix = np.column_stack([numeric_column(source, n, subjects, columns[n]) for n in names] or
                             [np.empty((len(subjects), 0))])

    tables = []
    for subject in subjects:
        csv = Path(base.replace(PLACEHOLDER, subject))
        if not csv.is_file():
            raise InputError(f"{source}: subject {subject} has no tractometry ({csv} not found)")
        tables.append((csv, *read_csv(csv)))
    first_csv, first_bundles, first_values = tables[0]
    chosen = pick_bundles(first_csv, bundles or file_bundles, first_bundles)
    values = np.empty((len(chosen), first_values.shape[0], len(subjects)))
    for s, (csv, names_in_csv, table) in enumerate(tables):
        missing = [b for b in chosen if b not in names_in_csv]
        if missing:
            raise InputError(f"{csv}: no column for bundle {missing[0]}")
        if table.shape[0] != values.shape[1]:
            raise InputError(f"{csv}: {table.shape[0]} points per bundle, but {first_csv} has {values.shape[1]} "
                             f"(tractometry run with another --nr_points?)")
        index = {b: j for j, b in enumerate(names_in_csv)}
        values[:, :, s] = table[:, [index[b] for b in chosen]].T
    if not np.isfinite(values).all():
        s = int(np.nonzero(~np.isfinite(values).all(axis=(0, 1)))[0][0])
        raise InputError(f"{tables[s][0]}: holds a value that is not a finite number")
    study = Study(source, kind, tuple(subjects), y, tuple(names), matrix, chosen, values, labels)
    return study, plot_3d
