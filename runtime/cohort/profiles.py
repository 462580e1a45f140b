"""The study report's tractometry section: per bundle, the subjects' mean profile with their spread, and the
subjects whose profile lies far from it.

Read from the done subjects' ``OUTROOT/<subject>/Tractometry.csv`` (the chain's, :mod:`runtime.chain`), in two
streamed passes (one subject in memory at a time, so a large study costs subjects x bundles numbers):

1. per bundle and point: the number of subjects, their mean, standard deviation (population, ddof 0), min and max;
2. per subject and bundle: the profile's distance to the study's mean profile, the root mean square of the
   pointwise differences; a subject is flagged for a bundle when the robust z of that distance over the study's
   subjects (:func:`runtime.cohort.outliers.robust_z`) is above ``OUTLIER_Z`` (3.5, as the volumes). Only far
   profiles count (distances are never negative, so only z > 3.5 flags).

An all-zero profile is what upstream's Tractometry writes for a bundle with fewer than 5 streamlines: it counts as
missing. Hooks: ``table#profiles`` with one ``tr.profile[data-bundle]`` per bundle, an inline ``svg.profile``
(min-max band, mean +/- 1 SD band, the mean line, a flagged subject's profile as a red ``polyline.outlier``), and
``span.outlier[data-subject][data-bundle]`` for each flagged subject.
"""
from __future__ import annotations

import html
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.cohort.outliers import OUTLIER_Z, robust_z
from runtime.cohort.significance import read_significance
from runtime.errors import InputError
from runtime.tractometry.table import TRACTOMETRY_CSV, read_csv



def subject_csvs(outroot: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> Iterator[tuple[str, Path]]:
    """(subject, its Tractometry.csv) of the done subjects that have one, by subject id."""
    for row in sorted(rows, key=lambda r: str(r.get("subject"))):
        path = Path(outroot) / str(row.get("subject")) / TRACTOMETRY_CSV
        if row.get("status") == "done" and path.is_file():
            yield str(row["subject"]), path


@dataclass
class BundleProfile:
    """One bundle over the study: per point ``n``, ``mean``, ``sd``, ``low``, ``high``; then each subject's
    distance to the mean profile, its robust z, and the flagged subjects' profiles."""

    n: int = 0
    total: np.ndarray | None = None
    squares: np.ndarray | None = None
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    distances: dict[str, float] = field(default_factory=dict)
    z: dict[str, float] = field(default_factory=dict)
    flagged: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, profile: np.ndarray) -> None:
        if self.total is None:
            self.total, self.squares = np.zeros_like(profile), np.zeros_like(profile)
            self.low, self.high = profile.copy(), profile.copy()
        if profile.shape != self.total.shape:
            return  # another --nr_points: not comparable point by point
        self.n += 1
        self.total += profile
        self.squares += profile ** 2
        np.minimum(self.low, profile, out=self.low)
        np.maximum(self.high, profile, out=self.high)

    @property
    def mean(self) -> np.ndarray:
        return self.total / self.n

    @property
    def sd(self) -> np.ndarray:
        return np.sqrt(np.maximum(self.squares / self.n - self.mean ** 2, 0.0))


def _profiles(outroot: Path, rows: Sequence[Mapping[str, Any]]):
    """(subject, bundle, profile) of every done subject's CSV, all-zero profiles left out."""
    for subject, path in subject_csvs(outroot, rows):
        try:
            bundles, values = read_csv(path)
        except InputError:
            continue  # the study table's writer names it
        for j, bundle in enumerate(bundles):
            if values[:, j].any():
                yield subject, bundle, values[:, j]


def study_profiles(outroot: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> dict[str, BundleProfile]:
    """Every bundle's :class:`BundleProfile` (module docstring), in first-seen order."""

    root = Path(outroot)
    found: dict[str, BundleProfile] = {}
    for _, bundle, profile in _profiles(root, rows):
        found.setdefault(bundle, BundleProfile()).add(profile)
    for subject, bundle, profile in _profiles(root, rows):
        entry = found[bundle]
        if profile.shape == entry.total.shape:
            entry.distances[subject] = float(np.sqrt(np.mean((profile - entry.mean) ** 2)))
    for entry in found.values():
        entry.z = dict(zip(entry.distances, robust_z(list(entry.distances.values())).tolist()))
    wanted = {(s, b) for b, e in found.items() for s, z in e.z.items() if z > OUTLIER_Z}
    if wanted:
        for subject, bundle, profile in _profiles(root, rows):
            if (subject, bundle) in wanted:
                found[bundle].flagged[subject] = profile
    return found


def _points(xs: np.ndarray, ys: np.ndarray) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))


def profile_svg(entry: BundleProfile, bundle: str, significant: Sequence[int] = ()) -> str:
    """The bundle's inline SVG: min-max band, mean +/- 1 SD band, mean line, flagged subjects in red, and the
    ``significant`` points (from 1) of a group analysis as orange columns."""
    width, height, pad = 300, 80, 4
    lows = [entry.low, entry.mean - entry.sd, *entry.flagged.values()]
    highs = [entry.high, entry.mean + entry.sd, *entry.flagged.values()]
    lo, hi = float(min(v.min() for v in lows)), float(max(v.max() for v in highs))
    span = hi - lo if hi > lo else 1.0
    xs = pad + np.arange(entry.mean.size) * (width - 2 * pad) / max(entry.mean.size - 1, 1)

    def y(values: np.ndarray) -> np.ndarray:
        return height - pad - (values - lo) / span * (height - 2 * pad)

    def band(low: np.ndarray, high: np.ndarray) -> str:
        return _points(np.concatenate([xs, xs[::-1]]), np.concatenate([y(high), y(low)[::-1]]))

    step = (width - 2 * pad) / max(entry.mean.size - 1, 1)
    marks = [f'<rect class="significant" x="{xs[p - 1] - step / 2:.1f}" y="0" width="{step:.1f}" '
             f'height="{height}" fill="#fbd38d"/>' for p in significant if 1 <= p <= entry.mean.size]
    parts = [f'<svg class="profile" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">'
             f'<title>{html.escape(bundle)}: {lo:.3g} .. {hi:.3g}</title>', *marks,
             f'<polygon class="range" points="{band(entry.low, entry.high)}" fill="#e3ecf5"/>',
             f'<polygon class="sd" points="{band(entry.mean - entry.sd, entry.mean + entry.sd)}" fill="#b9cde3"/>',
             f'<polyline class="mean" points="{_points(xs, y(entry.mean))}" fill="none" stroke="#024" '
             f'stroke-width="1.5"/>']
    for subject, profile in entry.flagged.items():
        parts.append(f'<polyline class="outlier" points="{_points(xs, y(profile))}" fill="none" stroke="#d22">'
                     f'<title>{html.escape(subject)}</title></polyline>')
    return "".join(parts) + "</svg>"


def profiles_section(outroot: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> str:
    """The report's HTML section, or "" when no done subject has a Tractometry.csv."""
    found = study_profiles(outroot, rows)
    if not found:
        return ""
    esc = html.escape
    stats = read_significance(outroot) or {}
    marked = stats.get("points", {})
    out = ['<h2>Tractometry: mean profile per bundle over the study</h2><p>Line: the mean of the subjects\' '
           'profiles (Tractometry.csv); dark band: mean &plusmn; 1 SD; light band: min to max; red: a flagged '
           f'subject. Flagged: the robust z of a subject\'s distance to the mean profile (RMS over the points) '
           f'&gt; {OUTLIER_Z}. All-zero profiles (fewer than 5 streamlines) count as missing.</p>',
           *([f'<p id="significance">Orange: the points where the {esc(str(stats.get("analysis")))} analysis of '
              f'{esc(str(stats.get("column")))} is significant (alphaFWE, alpha {esc(str(stats.get("alpha")))}; '
              f'tractseg-aot-stats, figure {esc(str(stats.get("figure")))}).</p>'] if stats else []),
           '<table id="profiles"><thead><tr><th>bundle</th><th>n</th><th>profile</th><th>outlier subjects</th>'
           '</tr></thead><tbody>']
    for bundle, entry in found.items():
        flags = ", ".join(f'<span class="outlier" data-subject="{esc(s)}" data-bundle="{esc(bundle)}">{esc(s)} '
                          f'(distance {entry.distances[s]:.3g}, z={entry.z[s]:+.1f})</span>' for s in entry.flagged)
        out.append(f'<tr class="profile{" has-outlier" if flags else ""}" data-bundle="{esc(bundle)}">'
                   f'<td>{esc(bundle)}</td><td class="num">{entry.n}</td>'
                   f'<td>{profile_svg(entry, bundle, marked.get(bundle, ()))}</td>'
                   f'<td>{flags}</td></tr>')
    out.append("</tbody></table>")
    return "\n".join(out)
