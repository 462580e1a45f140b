"""The tables beside the figure, and writing every output atomically (a temporary name in the same folder, then
``os.replace``; runtime.io.atomic).

* ``<output>.csv`` (``--save_csv``): upstream's table, as its pandas ``to_csv`` writes it: an unnamed index column,
  then ``bundle,alphaFWE,min_pvalue,t_value``, numbers through upstream's ``format_number`` (rounded to 6 decimals,
  or ``%.2e`` at or below 1e-5). ``t_value`` is the statistic (t, or r for a correlation) at the smallest p.
* ``<output>.segments.csv`` (always): ``bundle,point,statistic,p,significant``, one line per point (``point``
  counted from 1, as the study table's), floats as Python's shortest round-trip text, ``significant`` 1 or 0.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from runtime.errors import OutputError
from runtime.io.atomic import write_bytes_atomic, write_text_atomic
from runtime.tractometry_stats.stats import Result

SUMMARY_FIELDS = ("bundle", "alphaFWE", "min_pvalue", "t_value")
SEGMENT_FIELDS = ("bundle", "point", "statistic", "p", "significant")


def format_number(number: float) -> float | str:
    """Upstream's ``format_number``: rounded to 6 decimals above 1e-5 (in magnitude), else ``%.2e``."""
    return round(number, 6) if abs(number) > 0.00001 else f"{number:.2e}"


def summary_csv(result: Result) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("", *SUMMARY_FIELDS))
    for b, bundle in enumerate(result.bundles):
        p, stat = result.min_p(b)
        writer.writerow((b, bundle, format_number(float(result.alpha_fwe[b])), format_number(p),
                         format_number(stat)))
    return buffer.getvalue()


def segments_csv(result: Result) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SEGMENT_FIELDS)
    for b, bundle in enumerate(result.bundles):
        writer.writerows((bundle, i + 1, repr(float(result.stat[b, i])), repr(float(result.p[b, i])),
                          int(result.significant[b, i])) for i in range(result.stat.shape[1]))
    return buffer.getvalue()


def output_paths(output: Path) -> dict[str, Path]:
    return {"figure": output, "segments": Path(f"{output}.segments.csv"), "summary": Path(f"{output}.csv")}


def check_output(output: Path) -> None:
    """Refuse an output that can never be written before any work is done."""
    for path in output_paths(output).values():
        if path.is_dir():
            raise OutputError(f"{path}: is a folder, not a file path")


def write_outputs(output: Path, figure: bytes, result: Result, save_csv: bool) -> list[Path]:
    """The figure, the per-segment table and (``save_csv``) upstream's table, each written atomically."""
    paths = output_paths(output)
    written = []
    try:
        written.append(write_bytes_atomic(paths["figure"], figure))
        written.append(write_text_atomic(paths["segments"], segments_csv(result)))
        if save_csv:
            written.append(write_text_atomic(paths["summary"], summary_csv(result)))
    except OSError as error:
        target = next(p for p in paths.values() if p not in written)
        raise OutputError(f"{target}: cannot be written ({error.strerror or error})") from None
    return written
