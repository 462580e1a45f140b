"""The statistics of upstream's ``plot_tractometry_results``, vectorised over bundles x points x permutations.

Per point of every bundle: an unpaired t-test (pooled variance, scipy's ``ttest_ind``) between groups 0 and 1, or
a Pearson correlation with the target. Confounds are regressed out first as upstream's ``unconfound`` does: a
least-squares fit with intercept of each point's values on [group, confounds] (group analysis) or on the confounds
(correlation; the target is regressed on them too), then only the confounds' part is subtracted.

alphaFWE is AFQ's permutation method (Nichols & Holmes 2001, ``AFQ_MultiCompCorrection``): per permutation of
the labels (or the target) the smallest p over the bundle's points (``--mc``: over every bundle's points); sorted
ascending, entry ``int(round(alpha * nperm))`` is alphaFWE, and a point is significant when its p <= alphaFWE.

Both tests are a correlation of each point with a vector z (the 0/1 group, or the target): t^2 = df r^2 / (1-r^2)
and both p-values are I_{1-r^2}(df/2, 1/2). So the permutation null needs, per chunk of permutations, one matrix
product (centred profiles [bundles*points, subjects] @ permuted z [subjects, perms]) and the largest r^2 per bundle;
p only for those maxima. Segments that are constant over the subjects never give the smallest p (upstream's nan).

Subjects whose profile of a bundle is all zero (upstream's Tractometry writes zeros for bundles with fewer than 5
streamlines) are left out of that bundle. Without ``--mc`` each set of bundles with the same subjects gets its own
permutations of those subjects; with ``--mc`` the labels of all subjects are permuted once and each bundle uses its
own subjects' share.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import betainc, stdtr

from runtime.tractometry_stats.inputs import CORRELATION, GROUP, MIN_CORRELATION, MIN_PER_GROUP, Study

CHUNK_ELEMENTS = 2_000_000  # bundles*points x permutations per matrix product (16 MB of float64)
CONSTANT = 1e-24  # a segment whose sum of squares about its mean is below this times its sum of squares


@dataclass(frozen=True)
class Result:
    """``stat[b, p]`` (t, group 0 minus group 1; or r) and ``p[b, p]`` per point; ``alpha_fwe[b]`` and
    ``significant[b, p]``; ``tested[b]`` False for a bundle with too few subjects left (all nan there);
    ``values`` the profiles after confound regression, ``included[b, s]`` the subjects each bundle uses."""

    kind: str
    bundles: tuple[str, ...]
    stat: np.ndarray
    p: np.ndarray
    alpha_fwe: np.ndarray
    significant: np.ndarray
    tested: np.ndarray
    values: np.ndarray
    included: np.ndarray
    nperm: int
    mc: bool

    def min_p(self, b: int) -> tuple[float, float]:
        """(smallest p of bundle b, its statistic); nan when none."""
        if not np.isfinite(self.p[b]).any():
            return float("nan"), float("nan")
        i = int(np.nanargmin(self.p[b]))
        return float(self.p[b, i]), float(self.stat[b, i])


def alpha_index(alpha: float, nperm: int) -> int:
    """Upstream's entry of the sorted minima: ``int(round(alpha * nperm))`` (Python's rounding)."""
    return int(round(alpha * nperm))


def p_from_r2(r2: np.ndarray, df: np.ndarray) -> np.ndarray:
    """Two-sided p of a correlation (or of the t-test it equals) from r^2 and the degrees of freedom."""
    return betainc(df / 2.0, 0.5, np.clip(1.0 - r2, 0.0, 1.0))


def regress_confounds(study: Study, included: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(profiles, z) with the confounds regressed out as upstream's ``unconfound``: per set of bundles with the same
    subjects, one least-squares fit (centred, so the intercept is implied) of every point on the design."""
    values, z = study.values.copy(), study.y.astype(np.float64)
    confounds = study.confounds
    if confounds.shape[1] == 0:
        return values, z
    if study.kind == CORRELATION:  # the target loses its confound part too (fit over all subjects)
        centred = confounds - confounds.mean(0)
        coef = np.linalg.lstsq(centred, z - z.mean(), rcond=None)[0]
        z = z - confounds @ coef
    design = np.column_stack([study.y, confounds]) if study.kind == GROUP else confounds
    first = 1 if study.kind == GROUP else 0  # the group column is fitted, not subtracted
    patterns, which = np.unique(included, axis=0, return_inverse=True)
    for pattern, bundles in ((patterns[i], np.nonzero(which.ravel() == i)[0]) for i in range(len(patterns))):
        subjects = np.nonzero(pattern)[0]
        x = design[subjects]
        block = values[np.ix_(bundles, np.arange(values.shape[1]), subjects)]  # [nb, P, n]
        y = block.reshape(-1, len(subjects)).T  # [n, nb*P]
        coef = np.linalg.lstsq(x - x.mean(0), y - y.mean(0), rcond=None)[0]  # [k, nb*P]
        corrected = y - confounds[subjects] @ coef[first:]
        values[np.ix_(bundles, np.arange(values.shape[1]), subjects)] = corrected.T.reshape(block.shape)
    return values, z


def observed(kind: str, values: np.ndarray, included: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per point (stat, p): t and p of ``ttest_ind(group 0, group 1)``, or r and p of ``pearsonr(values, z)``,
    each over the bundle's included subjects."""
    w = included[:, None, :].astype(np.float64)  # [B, 1, S]
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == GROUP:
            w1 = w * (z == 1)
            w0 = w - w1
            n0, n1 = w0.sum(-1), w1.sum(-1)
            m0, m1 = (values * w0).sum(-1) / n0, (values * w1).sum(-1) / n1
            ss = (w0 * (values - m0[..., None]) ** 2).sum(-1) + (w1 * (values - m1[..., None]) ** 2).sum(-1)
            df = n0 + n1 - 2
            stat = (m0 - m1) / np.sqrt(ss / df * (1 / n0 + 1 / n1))
            return stat, 2 * stdtr(df, -np.abs(stat))
        n = w.sum(-1)
        xc = (values - (values * w).sum(-1, keepdims=True) / n[..., None]) * w
        zc = (z - (z * w).sum(-1, keepdims=True) / n[..., None]) * w
        r = (xc * zc).sum(-1) / np.sqrt((xc * xc).sum(-1) * (zc * zc).sum(-1))
        r = np.clip(r, -1.0, 1.0)
        return r, p_from_r2(r * r, n - 2)


def null_max_r2(values: np.ndarray, included: np.ndarray, z: np.ndarray, permutations: np.ndarray) -> np.ndarray:
    """[K, B]: per permutation k (``z[permutations[k]]``) and bundle, the largest r^2 over the bundle's points
    between its included subjects' profiles and the permuted z."""
    nb, npoints, n = values.shape
    w = included.astype(np.float64)  # [B, S]
    count = w.sum(1)
    xc = (values - (values * w[:, None]).sum(-1, keepdims=True) / count[:, None, None]) * w[:, None]
    sxx = (xc * xc).sum(-1)
    scale = (values * values * w[:, None]).sum(-1)
    inverse = np.divide(1.0, sxx, out=np.zeros_like(sxx), where=sxx > CONSTANT * scale)  # [B, P]
    flat = xc.reshape(nb * npoints, n)
    out = np.empty((len(permutations), nb))
    chunk = max(1, CHUNK_ELEMENTS // (nb * npoints))
    for start in range(0, len(permutations), chunk):
        zk = z[permutations[start:start + chunk]]  # [k, S]
        sxz = flat @ zk.T  # [B*P, k]
        best = ((sxz * sxz).reshape(nb, npoints, -1) * inverse[..., None]).max(axis=1)  # [B, k]
        szz = w @ (zk * zk).T - (w @ zk.T) ** 2 / count[:, None]  # [B, k]
        r2 = np.divide(best, szz, out=np.zeros_like(best), where=szz > 1e-12 * np.abs(w @ (zk * zk).T))
        out[start:start + chunk] = r2.T
    return out


def _tested(study: Study, included: np.ndarray) -> np.ndarray:
    if study.kind == GROUP:
        sizes = np.stack([(included & (study.y == g)).sum(1) for g in (0, 1)])
        return (sizes >= MIN_PER_GROUP).all(0)
    return included.sum(1) >= MIN_CORRELATION


def analyse(study: Study, nperm: int, alpha: float, mc: bool, rng: np.random.Generator,
            permutations: np.ndarray | None = None) -> Result:
    """The whole analysis. ``permutations`` ([nperm, subjects] index arrays) replaces the drawn ones where a
    permutation of all subjects is needed (tests use it to replay upstream's)."""
    included = study.values.any(axis=1)  # [B, S]: an all-zero profile is a missing one
    tested = _tested(study, included)
    values, z = regress_confounds(study, included)
    stat, p = observed(study.kind, values, included, z)
    stat[~tested], p[~tested] = np.nan, np.nan
    df = included.sum(1) - 2.0

    def draw(n: int) -> np.ndarray:
        if permutations is not None and permutations.shape[1] == n:
            return permutations
        return rng.permuted(np.tile(np.arange(n), (nperm, 1)), axis=1)

    index = alpha_index(alpha, nperm)
    alpha_fwe = np.full(len(study.bundles), np.nan)
    kept = np.nonzero(tested)[0]
    if mc and len(kept):
        r2 = null_max_r2(values[kept], included[kept], z, draw(len(z)))
        minima = p_from_r2(r2, df[kept]).min(axis=1)
        alpha_fwe[kept] = np.sort(minima)[index]
    elif len(kept):
        patterns, which = np.unique(included[kept], axis=0, return_inverse=True)
        for i, pattern in enumerate(patterns):
            bundles = kept[which.ravel() == i]
            subjects = np.nonzero(pattern)[0]
            block = values[np.ix_(bundles, np.arange(values.shape[1]), subjects)]
            r2 = null_max_r2(block, np.ones((len(bundles), len(subjects)), bool), z[subjects], draw(len(subjects)))
            alpha_fwe[bundles] = np.sort(p_from_r2(r2, df[bundles]), axis=0)[index]
    with np.errstate(invalid="ignore"):
        significant = p <= alpha_fwe[:, None]
    return Result(study.kind, study.bundles, stat, p, alpha_fwe, significant, tested, values, included, nperm, mc)
