"""Group statistics along the tracts, as the study report shows them: ``OUTROOT/tractometry_significance.json``,
written by ``tractseg-aot-stats --table OUTROOT/tractometry.csv`` (:mod:`runtime.tractometry_stats`), read by the
report's tractometry section (:mod:`runtime.cohort.profiles`), which marks each bundle's significant points on its
profile. ``points`` count from 1, as the study table's ``point`` column and the rows of Tractometry.csv."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from runtime.io.atomic import write_text_atomic

SIGNIFICANCE_FILE = "tractometry_significance.json"


def write_significance(outroot: str | os.PathLike[str], analysis: str, column: str, alpha: float,
                       figure: str | os.PathLike[str], points: dict[str, list[int]]) -> Path:
    """Record an analysis' significant points per bundle (atomically)."""
    document = {"analysis": analysis, "column": column, "alpha": alpha, "figure": str(figure),
                "points": {bundle: sorted(int(p) for p in found) for bundle, found in points.items()}}
    return write_text_atomic(Path(outroot) / SIGNIFICANCE_FILE, json.dumps(document, indent=1) + "\n")


def read_significance(outroot: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The recorded analysis, or None (none, or unreadable: the report then shows no marks)."""
    try:
        document = json.loads((Path(outroot) / SIGNIFICANCE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) and isinstance(document.get("points"), dict) else None
