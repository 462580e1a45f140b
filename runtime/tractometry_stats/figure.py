"""The figure: one panel per bundle (5 per row, upstream's layout and 200 dpi). In each panel the mean profile of
each group (a correlation: of all subjects) with its 95% confidence band (mean +- 1.96 standard errors; upstream's
seaborn draws a bootstrapped 95% interval), after confound regression as upstream plots it; the significant points
shaded red; on the right axis -log10(p) of every point (grey bars) and -log10(alphaFWE) (red dotted line); below,
upstream's three lines (alphaFWE, min p-value, t-value or corr.coeff. at the smallest p) and the subjects used
(per group).

matplotlib (the ``stats`` extra) is imported only here, through :func:`require_matplotlib`, and without pyplot
(no global state, no display needed).
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from runtime.errors import MissingExtraError
from runtime.tractometry_stats.inputs import GROUP, Study
from runtime.tractometry_stats.report import format_number
from runtime.tractometry_stats.stats import Result

MATPLOTLIB_MISSING = ("matplotlib is not installed; the tractometry statistics figure needs it: "
                      "pip install 'tractseg-aot[stats]'")
COLUMNS, DPI = 5, 200
PANEL = (3.4, 5.0)  # inches per panel, upstream's 3 x 5 a little wider for the -log10(p) axis
COLORS = ("tab:blue", "tab:orange")


def require_matplotlib():
    """matplotlib's Figure class; one line naming the extra when matplotlib is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtraError(MATPLOTLIB_MISSING) from None
    return Figure


def figure_format(output: Path) -> str | None:
    """The image format of ``output`` from its name (png when it has no suffix); None when matplotlib cannot
    write it."""
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = output.suffix.lower().lstrip(".") or "png"
    return suffix if suffix in FigureCanvasBase.get_supported_filetypes() else None


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of each run of True."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0] - 1))


def _profiles(ax, study: Study, result: Result, b: int, x: np.ndarray) -> None:
    groups = ((0, study.labels[0]), (1, study.labels[1])) if study.kind == GROUP else ((None, "all subjects"),)
    for (code, label), color in zip(groups, COLORS):
        chosen = result.included[b] & (True if code is None else study.y == code)
        values = result.values[b][:, chosen]
        n = values.shape[1]
        if n == 0:
            continue
        mean = values.mean(axis=1)
        half = 1.96 * values.std(axis=1, ddof=1) / math.sqrt(n) if n > 1 else np.zeros_like(mean)
        ax.plot(x, mean, color=color, lw=1.5, label=f"{label} (n={n})")
        ax.fill_between(x, mean - half, mean + half, color=color, alpha=0.25, lw=0)


def _counts(study: Study, result: Result, b: int) -> str:
    if study.kind != GROUP:
        return str(int(result.included[b].sum()))
    return " / ".join(str(int((result.included[b] & (study.y == code)).sum())) for code in (0, 1))


def _panel(ax, study: Study, result: Result, b: int, y_range: tuple[float, float] | None, legend: bool) -> None:
    x = np.arange(1, study.nr_points + 1)
    ax.set_title(result.bundles[b])
    ax.set(xlabel="position along tract", ylabel="metric")
    if not result.tested[b]:
        _profiles(ax, study, result, b, x)
        ax.text(0.5, 0.5, "too few subjects\nnot tested", transform=ax.transAxes, ha="center", va="center")
        return
    p = np.nan_to_num(result.p[b], nan=1.0)
    twin = ax.twinx()
    edges = np.arange(0.5, study.nr_points + 1)  # one filled step artist (98 bars each cost a patch)
    twin.stairs(-np.log10(np.maximum(p, 1e-300)), edges, fill=True, color="gray", alpha=0.35, lw=0)
    twin.axhline(-math.log10(result.alpha_fwe[b]), color="red", linestyle=":", lw=1.2)
    twin.set_ylabel("-log10(p)")
    ax.set_zorder(twin.get_zorder() + 1)  # profiles above the bars
    ax.patch.set_visible(False)
    for first, last in _runs(result.significant[b]):
        ax.axvspan(first + 0.5, last + 1.5, color="red", alpha=0.12, lw=0)
    _profiles(ax, study, result, b, x)
    if y_range is not None:
        ax.set_ylim(*y_range)
    if legend:
        ax.legend(fontsize=8, loc="best")
    min_p, stat = result.min_p(b)
    label = "t-value:      " if study.kind == GROUP else "corr.coeff.: "
    lines = (f"alphaFWE:   {format_number(float(result.alpha_fwe[b]))}", f"min p-value: {format_number(min_p)}",
             f"{label}   {format_number(stat)}", f"subjects:    {_counts(study, result, b)}")
    for i, text in enumerate(lines):
        ax.annotate(text, (0, 0), (0, -35 - 10 * i), xycoords="axes fraction", textcoords="offset points",
                    va="top", fontsize=10)


def render(study: Study, result: Result, image_format: str = "png",
           y_range: tuple[float, float] | None = None) -> bytes:
    """The figure as ``image_format`` bytes."""
    figure_class = require_matplotlib()
    count = len(result.bundles)
    columns = min(COLUMNS, count)
    rows = math.ceil(count / columns)
    width, height = columns * PANEL[0], rows * PANEL[1]
    figure = figure_class(figsize=(width, height))
    axes = figure.subplots(rows, columns, squeeze=False, gridspec_kw=dict(  # fixed margins: tight_layout is slow
        left=0.75 / width, right=1 - 0.6 / width, top=1 - 0.35 / height, bottom=1.25 / height,
        wspace=1.35 / (PANEL[0] - 1.35), hspace=1.6 / (PANEL[1] - 1.6))).ravel()
    for b, ax in enumerate(axes):
        if b < count:
            _panel(ax, study, result, b, y_range, legend=b == 0 and study.kind == GROUP)
        else:
            ax.set_axis_off()
    buffer = io.BytesIO()
    figure.savefig(buffer, format=image_format, dpi=DPI)
    return buffer.getvalue()
