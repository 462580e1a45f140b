"""Study-level outputs of a cohort run: ``OUTROOT/statistics.csv`` and ``OUTROOT/report.html``.

Built only from the subject rows and the files on disk (``OUTROOT/<subject>/statistics.json`` written by
:mod:`runtime.qc.statistics`, ``OUTROOT/<subject>/preview.png`` written by :mod:`runtime.qc.preview`), so a plain rerun
of :func:`write_study_report` regenerates both from the results of an earlier run.

A subject row is a dict with keys ``subject, peaks, status ("done" | "failed" | "skipped" | other), error,
seconds, peak_rss_mb, slices_run, worker``; missing keys read as None.

Tractometry (chain studies, :mod:`runtime.cohort.profiles`): a section with every bundle's mean profile and spread
over the subjects' ``OUTROOT/<subject>/Tractometry.csv``, subjects far from it flagged.

Volumes: ``volume_ml`` of mask runs, ``volume_ml_above_threshold`` of ``--get_probabilities`` runs. Outliers: a
subject's bundle volume is flagged when its robust z (:func:`robust_z`, over the study's subjects that have that
bundle) has ``|z| > 3.5`` (Iglewicz and Hoaglin's cut-off for the modified z-score).

The HTML page is self-contained (inline CSS and SVG, no script, nothing fetched) and opens offline; pictures are
linked by paths relative to the page. Stable hooks for tests and scripts: ``table#subjects`` with one
``tr.subject.<status>[data-subject]`` per subject (failed first), ``table#bundles`` with one
``tr.bundle[data-bundle]`` per bundle, and ``class="outlier"`` on every flagged cell or name (with
``data-subject`` and ``data-bundle``); rows of subjects with an outlier also carry ``has-outlier``.
stdlib + numpy only.
"""
from __future__ import annotations

import csv
import html
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from runtime.cohort.outliers import OUTLIER_Z, robust_z
from runtime.cohort.profiles import profiles_section
from runtime.io.atomic import write_text_atomic
from runtime.qc.statistics import META_KEY, read_statistics

STATUS_ORDER = {"failed": 0, "skipped": 2, "done": 3}          # any other status: 1 (after failed)
VOLUME_KEYS = ("volume_ml", "volume_ml_above_threshold")
Row = Mapping[str, Any]


def subject_statistics(outroot: Path, row: Row) -> dict[str, Any] | None:
    """A done subject's ``statistics.json``, or None (not done, missing or unreadable)."""
    path = Path(outroot) / str(row.get("subject")) / "statistics.json"
    if row.get("status") != "done" or not path.is_file():
        return None
    try:
        return read_statistics(path)
    except ValueError:
        return None


def volume_table(outroot: str | os.PathLike[str], rows: Sequence[Row]) -> tuple[list[str], np.ndarray,
                                                                                   list[dict[str, Any] | None]]:
    """Bundle names (first-seen order), volumes (subjects x bundles, NaN where missing) and each row's statistics."""
    documents = [subject_statistics(Path(outroot), row) for row in rows]
    bundles: list[str] = []
    for document in documents:
        bundles.extend(name for name in (document or {}) if name != META_KEY and name not in bundles)
    volumes = np.full((len(rows), len(bundles)), np.nan)
    for i, document in enumerate(documents):
        for j, name in enumerate(bundles):
            entry = (document or {}).get(name)
            value = next((entry[k] for k in VOLUME_KEYS if isinstance(entry, dict) and entry.get(k) is not None),
                         None)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                volumes[i, j] = float(value)  # a hand-edited Infinity/NaN counts as missing
    return bundles, volumes, documents


def write_statistics_csv(outroot: str | os.PathLike[str], rows: Sequence[Row], path: str | os.PathLike[str]) -> Path:
    """One line per subject (row order), columns ``subject`` then one per bundle: its volume in ml; empty cells
    for failed or missing subjects/bundles. ``pandas.read_csv(path, index_col="subject")`` reads it."""
    bundles, volumes, _ = volume_table(outroot, rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["subject", *bundles])
    for row, line in zip(rows, volumes):
        writer.writerow([row.get("subject"), *("" if np.isnan(v) else repr(float(v)) for v in line)])
    return write_text_atomic(path, buffer.getvalue())


def _number(value: Any, digits: int = 1) -> str:
    """A number, from the runner's rows or from cohort.csv's text cells; "" for anything else."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return ""
    return f"{value:.{digits}f}"


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _box_svg(values: np.ndarray, flagged: np.ndarray, names: Sequence[str]) -> str:
    """An inline SVG box plot (quartiles, whiskers to the extreme non-outliers, outliers as red dots)."""
    width, height, pad = 240, 18, 5
    lo, hi = float(values.min()), float(values.max())
    scale = (lambda v: pad + (v - lo) / (hi - lo) * (width - 2 * pad)) if hi > lo else (lambda v: width / 2)
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    inner = values[~flagged] if (~flagged).any() else values
    parts = [f'<svg class="box" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
             f'<line x1="{scale(inner.min()):.1f}" x2="{scale(inner.max()):.1f}" y1="9" y2="9" stroke="#888"/>',
             f'<rect x="{scale(q1):.1f}" y="4" width="{max(scale(q3) - scale(q1), 1):.1f}" height="10" '
             f'fill="#cde" stroke="#468"/>',
             f'<line x1="{scale(median):.1f}" x2="{scale(median):.1f}" y1="3" y2="15" stroke="#024" '
             f'stroke-width="2"/>']
    for value, is_outlier, name in zip(values, flagged, names):
        if is_outlier:
            parts.append(f'<circle class="outlier" cx="{scale(value):.1f}" cy="9" r="3.5" fill="#d22">'
                         f'<title>{html.escape(name)}: {value:.2f} ml</title></circle>')
    return "".join(parts) + "</svg>"


STYLE = """body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}h1{font-size:20px}h2{font-size:16px;
margin-top:28px}table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;
vertical-align:middle}th{background:#f3f3f3}tr.failed td{background:#fde8e8}tr.flipped td{background:#fff3d6}
tr.skipped td{color:#777}
td.error{min-width:260px;max-width:420px;font-family:monospace;font-size:12px;white-space:pre-wrap;word-break:break-word}
.outlier{color:#b00;font-weight:bold}.demo{color:#b00;font-weight:bold}img.thumb{height:90px;border:1px solid #ccc}td.num{text-align:right;
font-variant-numeric:tabular-nums}.summary span{margin-right:16px}"""


def orientation_warning(row: Row) -> str:
    """The row's warning that a peak axis looks flipped (the orientation check), or ""."""
    return next((line for line in _text(row.get("warnings")).split(" | ") if "looks flipped" in line), "")


def report_html(outroot: str | os.PathLike[str], rows: Sequence[Row], page_dir: str | os.PathLike[str],
                title: str) -> str:
    """The page's text; pictures are linked relative to ``page_dir`` (the folder the page is written to)."""
    bundles, volumes, documents = volume_table(outroot, rows)
    z = np.column_stack([robust_z(volumes[:, j]) for j in range(len(bundles))]) if bundles else volumes
    flagged = np.abs(np.nan_to_num(z, nan=0.0)) > OUTLIER_Z
    esc = html.escape
    kind = next((d[META_KEY].get("kind") for d in documents if d), None)
    counts: dict[str, int] = {}
    for row in rows:
        counts[str(row.get("status"))] = counts.get(str(row.get("status")), 0) + 1
    out = [f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
           f'<style>{STYLE}</style></head><body><h1>{esc(title)}</h1>',
           *(['<p class="demo" id="demo">DEMO WEIGHTS (random, not trained): these masks are not anatomy.</p>']
             if any(d and d.get(META_KEY, {}).get("demo_weights") for d in documents) else []),
           '<p class="summary" id="summary">' + "".join(f'<span class="count {esc(s)}">{esc(s)}: {n}</span>'
                                                         for s, n in sorted(counts.items())) + "</p>",
           '<h2>Subjects</h2><table id="subjects"><thead><tr><th>subject</th><th>status</th><th>time (s)</th>'
           '<th>peak RSS (MB)</th><th>worker</th><th>error</th><th>outlier bundles</th><th>preview</th></tr>'
           '</thead><tbody>']
    flips = [orientation_warning(row) for row in rows]  # the orientation check's warning (runtime.runner)
    order = sorted(range(len(rows)), key=lambda i: (STATUS_ORDER.get(str(rows[i].get("status")), 1),
                                                    not flips[i], i))  # flagged subjects first
    for i in order:
        row, subject = rows[i], str(rows[i].get("subject"))
        status = str(rows[i].get("status"))
        names = [bundles[j] for j in np.flatnonzero(flagged[i])] if bundles else []
        css = " ".join(["subject", status, *(["has-outlier"] if names else []), *(["flipped"] if flips[i] else [])])
        missing = status == "done" and not documents[i] and any(documents)  # (a chain study without --statistics)
        error = _text(row.get("error")) or flips[i] or ("statistics.json missing" if missing else "")
        preview = Path(outroot) / subject / "preview.png"
        thumb = ""
        if preview.is_file():
            href = esc(quote(Path(os.path.relpath(preview, page_dir)).as_posix()))
            thumb = (f'<a href="{href}"><img class="thumb" src="{href}" alt="preview of {esc(subject)}"></a>')
        flags = ", ".join(f'<span class="outlier" data-subject="{esc(subject)}" data-bundle="{esc(b)}">{esc(b)} '
                          f'(z={z[i, bundles.index(b)]:+.1f})</span>' for b in names)
        out.append(f'<tr class="{esc(css)}" data-subject="{esc(subject)}" data-status="{esc(status)}">'
                   f'<td title="{esc(_text(row.get("peaks")))}">{esc(subject)}</td><td>{esc(status)}</td>'
                   f'<td class="num">{_number(row.get("seconds"))}</td>'
                   f'<td class="num">{_number(row.get("peak_rss_mb"))}</td><td>{esc(_text(row.get("worker")))}'
                   f'</td><td class="error">{esc(str(error))}</td><td>{flags}</td><td>{thumb}</td></tr>')
    out.append("</tbody></table>")
    unit = "volume above threshold (ml)" if kind == "probabilities" else "volume (ml)"
    out.append(f'<h2>Bundles: {esc(unit)} over the study</h2><p>Outliers: robust z = (x - median) / (1.4826 MAD), '
               f'|z| &gt; {OUTLIER_Z}.</p><table id="bundles"><thead><tr><th>bundle</th><th>n</th><th>median</th>'
               '<th>MAD</th><th>min</th><th>max</th><th>distribution</th><th>outlier subjects</th></tr></thead><tbody>')
    for j, bundle in enumerate(bundles):
        have = np.isfinite(volumes[:, j])
        if not have.any():  # no subject has a usable volume for it (hand-edited files): nothing to plot
            continue
        values = volumes[have, j]
        subjects = [str(rows[i].get("subject")) for i in np.flatnonzero(have)]
        median = float(np.median(values))
        mad = float(np.median(np.abs(values - median)))
        outliers = ", ".join(f'<span class="outlier" data-subject="{esc(s)}" data-bundle="{esc(bundle)}">{esc(s)} '
                             f'({v:.2f}, z={zv:+.1f})</span>' for s, v, zv, f in
                             zip(subjects, values, z[have, j], flagged[have, j]) if f)
        out.append(f'<tr class="bundle{" has-outlier" if outliers else ""}" data-bundle="{esc(bundle)}">'
                   f'<td>{esc(bundle)}</td><td class="num">{values.size}</td><td class="num">{median:.2f}</td>'
                   f'<td class="num">{mad:.2f}</td><td class="num">{values.min():.2f}</td><td class="num">'
                   f'{values.max():.2f}</td><td>{_box_svg(values, flagged[have, j], subjects)}</td>'
                   f'<td>{outliers}</td></tr>')
    out.append("</tbody></table>")

    out.append(profiles_section(outroot, rows) + "</body></html>\n")  # "" unless subjects have Tractometry.csv
    return "\n".join(out)


def write_report_html(outroot: str | os.PathLike[str], rows: Sequence[Row], path: str | os.PathLike[str],
                      title: str) -> Path:
    """Write the self-contained HTML report atomically (see the module docstring for its structure)."""
    return write_text_atomic(path, report_html(outroot, rows, Path(path).parent, title))


def rows_from_disk(outroot: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows for a report when the cohort's own rows are lost: every ``OUTROOT/<subject>/statistics.json`` is a
    done subject (sorted by name; time, memory and worker unknown). Failed subjects cannot be recovered this way."""
    return [{"subject": p.parent.name, "peaks": None, "status": "done", "error": None, "seconds": None,
             "peak_rss_mb": None, "slices_run": None, "worker": None}
            for p in sorted(Path(outroot).glob("*/statistics.json"))]


def write_study_report(outroot: str | os.PathLike[str], rows: Sequence[Row],
                       title: str | None = None) -> tuple[Path, Path]:
    """Write ``OUTROOT/statistics.csv`` and ``OUTROOT/report.html``; returns both paths."""
    root = Path(outroot)
    csv_path = write_statistics_csv(root, rows, root / "statistics.csv")
    html_path = write_report_html(root, rows, root / "report.html", title or f"TractSeg study: {root.resolve().name}")
    return csv_path, html_path
