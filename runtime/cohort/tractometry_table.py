"""The study's tractometry table: every done subject's ``Tractometry.csv`` merged into ``OUTROOT/tractometry.csv``,
long format, one line per value: ``subject,bundle,point,value``.

``point`` is the row of the subject's CSV counted from 1, which is the segment index along the bundle (upstream's
Tractometry drops segments 0 and nr_points - 1); ``value`` is the CSV's value, written as Python's shortest
round-trip text (``repr(float)``), so the table reads back to the very same floats. Lines are ordered by subject,
then bundle (the CSV's column order), then point. A bundle that upstream writes as zeros (fewer than 5
streamlines) is kept as it is here; the study report treats an all-zero profile as missing. The table is written
in one streamed pass (one subject's CSV in memory at a time) to a temporary name and moved into place.
"""
from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from runtime.errors import InputError, OutputError
from runtime.io.atomic import atomic_target
from runtime.cohort.profiles import subject_csvs
from runtime.tractometry.table import read_csv

STUDY_TABLE = "tractometry.csv"
FIELDS = ("subject", "bundle", "point", "value")
log = logging.getLogger("tractseg_aot")


def write_study_table(outroot: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> tuple[Path, int]:
    """Write ``OUTROOT/tractometry.csv`` from the done subjects' CSVs; returns its path and the subjects merged.
    A subject whose CSV cannot be read is left out with a warning naming it."""
    target = Path(outroot) / STUDY_TABLE
    merged = 0
    try:
        with atomic_target(target) as temporary:
            with open(temporary, "w", encoding="utf-8", newline="") as stream:
                writer = csv.writer(stream, lineterminator="\n")
                writer.writerow(FIELDS)
                for subject, path in subject_csvs(outroot, rows):
                    try:
                        bundles, values = read_csv(path)
                    except InputError as error:
                        log.warning("%s; left out of %s", error, target)
                        continue
                    writer.writerows((subject, bundle, point, repr(float(value)))
                                     for j, bundle in enumerate(bundles)
                                     for point, value in enumerate(values[:, j], 1))
                    merged += 1
    except OSError as error:
        raise OutputError(f"{target}: the study table cannot be written ({error.strerror or error})") from None
    return target, merged
