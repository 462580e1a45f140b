"""What both ways in produce: a :class:`Study` (subjects, the tested variable, the confounds, every bundle's profiles),
and the checks and codings they share: a column of numbers, a two-valued group (text labels coded 0/1 where the
source allows them), a target that varies, a confound, enough subjects per group.

Every problem raises :class:`~runtime.errors.InputError` with one line naming the file that holds it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from runtime.errors import InputError

GROUP, CORRELATION = "group", "correlation"
MIN_PER_GROUP = 3  # subjects in each group of a group analysis (per bundle, once all-zero profiles are left out)
MIN_CORRELATION = 4  # subjects of a correlation analysis (two degrees of freedom)
MISSING = frozenset({"", "n/a", "na", "nan"})


@dataclass(frozen=True)
class Study:
    """One analysis: ``values[b, p, s]`` is subject ``subjects[s]``'s profile of ``bundles[b]`` at point ``p``;
    ``y`` the group (0/1) or the target of each subject; ``confounds[s, c]`` the ``confound_names``."""

    source: Path  # the file that defines the design (subjects file / participants table)
    kind: str  # GROUP or CORRELATION
    subjects: tuple[str, ...]
    y: np.ndarray
    confound_names: tuple[str, ...]
    confounds: np.ndarray
    bundles: tuple[str, ...]
    values: np.ndarray
    labels: tuple[str, str] = ("Group 0", "Group 1")  # legend of groups 0 and 1

    @property
    def nr_points(self) -> int:
        return self.values.shape[1]


def number(text: str) -> float | None:
    """``text`` as a finite float, else None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _missing(source: Path, column: str, subjects: Sequence[str], texts: Sequence[str]) -> None:
    for subject, text in zip(subjects, texts):
        if text.strip().lower() in MISSING:
            raise InputError(f"{source}: subject {subject} has no value ({text.strip() or 'empty'!r}) in column "
                             f"{column}; give one or remove the subject")


def numeric_column(source: Path, column: str, subjects: Sequence[str], texts: Sequence[str]) -> np.ndarray:
    """The column as float64; one line naming the first subject whose value is not a number."""
    _missing(source, column, subjects, texts)
    values = [number(t) for t in texts]
    for subject, text, value in zip(subjects, texts, values):
        if value is None:
            raise InputError(f"{source}: column {column} contains non-numeric values ({text.strip()!r} of subject "
                             f"{subject})")
    return np.array(values, dtype=np.float64)


def _two_levels(source: Path, column: str, subjects: Sequence[str], texts: Sequence[str],
                allow_text: bool, what: str) -> tuple[np.ndarray, tuple[str, str], bool]:
    """Two distinct values coded 0/1: (codes, (label of 0, label of 1), whether the values were recoded)."""
    _missing(source, column, subjects, texts)
    numbers = [number(t) for t in texts]
    if all(n is not None for n in numbers):
        levels = sorted(set(numbers))
        names = [f"{v:g}" for v in levels]
        keys = numbers
    elif not allow_text:
        numeric_column(source, column, subjects, texts)  # raises, naming the first bad value
        raise AssertionError("unreachable")
    else:
        keys = [t.strip() for t in texts]
        levels = sorted(set(keys))
        names = list(levels)
    if len(levels) != 2:
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        raise InputError(f"{source}: column {column} has {len(levels)} distinct value{'s' * (len(levels) != 1)} "
                         f"({shown}); {what} needs exactly two")
    codes = np.array([levels.index(k) for k in keys], dtype=np.float64)
    recoded = levels != [0.0, 1.0]
    return codes, (names[0], names[1]), recoded


def group_column(source: Path, column: str, subjects: Sequence[str], texts: Sequence[str],
                 allow_text: bool) -> tuple[np.ndarray, tuple[str, str]]:
    """The group of each subject as 0/1. Upstream's subjects file (``allow_text=False``) must hold 0 and 1 as
    upstream checks; a participants table may hold any two values, text or numbers, coded in sorted order (the
    mapping is printed)."""
    if not allow_text:
        values = numeric_column(source, column, subjects, texts)
        if values.max() > 1:
            raise InputError(f"{source}: column '{column}' may only contain 0 and 1")
        if not np.isin(values, (0.0, 1.0)).all():
            raise InputError(f"{source}: column '{column}' may only contain 0 and 1 (found "
                             f"{sorted(set(values.tolist()) - {0.0, 1.0})[0]:g})")
        if len(set(values.tolist())) != 2:
            raise InputError(f"{source}: column '{column}' holds only {values[0]:g}; a group analysis needs "
                             f"subjects of groups 0 and 1")
        return values, ("Group 0", "Group 1")
    codes, names, recoded = _two_levels(source, column, subjects, texts, True, "a group analysis")
    if recoded:
        print(f"Group column '{column}' coded: {names[0]} -> 0, {names[1]} -> 1")
    return codes, names


def target_column(source: Path, column: str, subjects: Sequence[str], texts: Sequence[str]) -> np.ndarray:
    values = numeric_column(source, column, subjects, texts)
    if np.ptp(values) == 0:
        raise InputError(f"{source}: column {column} is constant ({values[0]:g} for every subject); a correlation "
                         f"needs a target that varies")
    return values


def confound_column(source: Path, column: str, subjects: Sequence[str], texts: Sequence[str],
                    allow_text: bool) -> np.ndarray:
    """A confound: numbers; with ``allow_text`` also a two-level text column (e.g. sex M/F), coded 0/1 in sorted
    order with the mapping printed."""
    if not allow_text or all(number(t) is not None for t in texts):
        return numeric_column(source, column, subjects, texts)
    if any(number(t) is not None for t in texts if t.strip().lower() not in MISSING):
        numeric_column(source, column, subjects, texts)  # numbers mixed with text: name the first text
    codes, names, _ = _two_levels(source, column, subjects, texts, True, "a text confound")
    print(f"Confound '{column}' coded: {names[0]} -> 0, {names[1]} -> 1")
    return codes


def check_group_sizes(source: Path, kind: str, y: np.ndarray, labels: tuple[str, str]) -> None:
    """Enough subjects for the analysis at all (a bundle that loses subjects to all-zero profiles is checked again,
    and left out, by the statistics)."""
    if kind == GROUP:
        for code, label in enumerate(labels):
            n = int((y == code).sum())
            if n < MIN_PER_GROUP:
                named = "" if label in (str(code), f"Group {code}") else f" ({label})"
                raise InputError(f"{source}: too few subjects in group {code}{named}: {n}; a group analysis "
                                 f"needs at least {MIN_PER_GROUP} per group")
    elif len(y) < MIN_CORRELATION:
        raise InputError(f"{source}: too few subjects ({len(y)}); a correlation needs at least {MIN_CORRELATION}")


def pick_bundles(source: Path, requested: Sequence[str] | None, available: Sequence[str]) -> tuple[str, ...]:
    """The requested bundles (all available ones when None), each checked against ``available``."""
    if not requested:
        return tuple(available)
    unknown = [b for b in requested if b not in available]
    if unknown:
        raise InputError(f"{source}: no bundle {unknown[0]} (it has {len(available)}: "
                         f"{', '.join(list(available)[:4])}{', ...' if len(available) > 4 else ''})")
    if len(set(requested)) != len(requested):
        raise InputError(f"{source}: a bundle is named twice in the bundle list")
    return tuple(requested)


def check_unique(source: Path, subjects: Sequence[str]) -> None:
    seen: set[str] = set()
    for subject in subjects:
        if subject in seen:
            raise InputError(f"{source}: subject {subject} is listed twice")
        seen.add(subject)


def drop_empty_bundles(study: Study) -> tuple[Study, list[str]]:
    """The study without the bundles whose profile is all zero for every subject (not tracked anywhere), and their
    names; an error when no bundle is left."""
    empty = ~study.values.any(axis=(1, 2))
    if not empty.any():
        return study, []
    if empty.all():
        raise InputError(f"{study.source}: every profile of the selected bundles is all zero (no subject has "
                         f"tractometry for them)")
    keep = np.nonzero(~empty)[0]
    dropped = [study.bundles[b] for b in np.nonzero(empty)[0]]
    return replace(study, bundles=tuple(study.bundles[b] for b in keep), values=study.values[keep]), dropped
