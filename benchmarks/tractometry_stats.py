"""python -m benchmarks.tractometry_stats: runtime.tractometry_stats against upstream TractSeg 2.10's
``plot_tractometry_results`` statistics on the same synthetic study (50 bundles x 100 points x 100 subjects,
5,000 permutations by default), same machine, same run; also the upstream reference that
tests/test_tractometry_stats.py uses (one place for both).

Upstream's script imports pandas, seaborn and xvfbwrapper at the top, which its ``--no-deps`` install here does not
have, so :func:`upstream_analysis` replays its statistics loop with upstream's own functions
(``metric_utils.unconfound``, ``AFQ_MultiCompCorrection``, ``get_significant_areas``) and the same per-point
``scipy.stats.ttest_ind`` / ``pearsonr`` calls, step for step as ``plot_tractometry_with_pvalue`` makes them
(the plotting left out). Upstream's permutation loop takes minutes at 5,000 permutations, so it is timed at two
smaller counts and the time is extrapolated linearly in the permutations (the fit's intercept is the per-point
tests and the setup); ours is timed at the full count. BLAS runs on one thread for both (threadpoolctl).

Result: printed and saved to benchmarks/results/tractometry-stats-<machine>.json.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np


def synthetic_profiles(nb: int, npoints: int, nsubjects: int, seed: int = 0, effect: float = 0.0,
                       where: tuple[int, int, int] = (0, 30, 50), groups: np.ndarray | None = None) -> np.ndarray:
    """FA-like profiles [bundles, points, subjects]: a smooth mean per bundle, a subject offset and smooth noise;
    ``effect`` added to group 1 (``groups``) on bundle ``where[0]``, points ``where[1]:where[2]``."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, npoints)
    base = 0.45 + 0.1 * np.sin(2 * np.pi * (x[None] + rng.random((nb, 1))))  # [B, P]
    noise = rng.normal(0, 0.03, (nb, npoints + 8, nsubjects))
    kernel = np.ones(9) / 3.0  # smooth along the tract, sd stays ~0.03
    smooth = np.apply_along_axis(lambda v: np.convolve(v, kernel, "valid"), 1, noise)
    values = base[..., None] + rng.normal(0, 0.02, (1, 1, nsubjects)) + smooth
    if effect and groups is not None:
        b, first, last = where
        values[b, first:last, groups == 1] += effect
    return values


def upstream_permutations(seed: int, n: int, nperm: int, correlation: bool) -> np.ndarray:
    """The permutations upstream's ``AFQ_MultiCompCorrection`` draws after ``random.seed(seed)``, as index arrays
    for :func:`runtime.tractometry_stats.stats.analyse` (``z[perm]``). ``random.sample`` picks the same positions
    whatever the population, so ``sample(list(y), n) == y[sample(range(n), n)]`` (t-test); the correlation
    shuffles the data's rows, which is the target shuffled by the inverse permutation."""
    random.seed(seed)
    rows = np.array([random.sample(range(n), n) for _ in range(nperm)])
    return np.argsort(rows, axis=1) if correlation else rows


def upstream_analysis(values: np.ndarray, y: np.ndarray, confounds: np.ndarray, kind: str, mc: bool, nperm: int,
                      alpha: float = 0.05, seed: int | None = None) -> dict[str, np.ndarray]:
    """Upstream's statistics on ``values[b, p, s]`` (subjects in the subjects file's order, group 0 first when
    ``kind`` is "group"), with ``random.seed(seed)`` before its permutations: per point stat and p, per bundle
    alphaFWE and the significant points."""
    import scipy.stats
    from tractseg.libs import metric_utils
    from tractseg.libs.AFQ_MultiCompCorrection import AFQ_MultiCompCorrection, get_significant_areas

    nb, npoints, _ = values.shape
    values, target = values.copy(), y.astype(np.float64).copy()
    if confounds.shape[1]:  # correct_for_confounds: one fit per bundle and point
        for b in range(nb):
            for j in range(npoints):
                column = values[b, j][:, None]
                if kind == "group":
                    values[b, j] = metric_utils.unconfound(column, np.column_stack([y, confounds]),
                                                           group_data=True).squeeze()
                else:
                    values[b, j] = metric_utils.unconfound(column, confounds, group_data=False).squeeze()
                    target = metric_utils.unconfound(target[:, None], confounds, group_data=False).squeeze()
    a, g = (np.nonzero(y == 0)[0], np.nonzero(y == 1)[0]) if kind == "group" else (np.arange(len(y)), [])
    y_afq = np.array((0,) * len(a) + (1,) * len(g)) if kind == "group" else target
    if seed is not None:
        random.seed(seed)
    alpha_fwe = np.zeros(nb)
    if mc:
        data = values.transpose(2, 0, 1).reshape(len(y), nb * npoints)  # subjects' bundles concatenated
        alpha_fwe[:] = AFQ_MultiCompCorrection(data, y_afq, alpha, nperm=nperm)[0]
    stat, p = np.zeros((nb, npoints)), np.zeros((nb, npoints))
    significant = np.zeros((nb, npoints), dtype=bool)
    order = np.concatenate([a, g]).astype(int)
    for b in range(nb):
        if not mc:
            alpha_fwe[b] = AFQ_MultiCompCorrection(values[b][:, order].T, y_afq, alpha, nperm=nperm)[0]
        for j in range(npoints):
            if kind == "group":
                stat[b, j], p[b, j] = scipy.stats.ttest_ind(values[b, j, a], values[b, j, g])
            else:
                stat[b, j], p[b, j] = scipy.stats.pearsonr(values[b, j], target)
        significant[b] = get_significant_areas(p[b], 1, alpha_fwe[b]).astype(bool)
    return {"stat": stat, "p": p, "alpha_fwe": alpha_fwe, "significant": significant}


def _study(values: np.ndarray, y: np.ndarray, kind: str):
    from runtime.tractometry_stats.inputs import Study

    return Study(Path("synthetic"), kind, tuple(f"s{i:03d}" for i in range(len(y))), y, (),
                 np.empty((len(y), 0)), tuple(f"B{b}" for b in range(values.shape[0])), values)


def _timed(fn, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.tractometry_stats", description=__doc__.splitlines()[0])
    p.add_argument("--bundles", type=int, default=50)
    p.add_argument("--points", type=int, default=100)
    p.add_argument("--subjects", type=int, default=100)
    p.add_argument("--nperm", type=int, default=5000)
    p.add_argument("--upstream-nperm", default="100,300", help="the two permutation counts upstream's group "
                   "analyses are timed at (its correlation: these / 20, as it runs 100 tests per permutation)")
    p.add_argument("--no-upstream", action="store_true")
    p.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/tractometry-stats-<machine>.json)")
    args = p.parse_args(argv)
    from threadpoolctl import threadpool_limits

    from benchmarks.machine import load_average, machine_info, machine_kind
    from runtime.tractometry_stats.figure import render
    from runtime.tractometry_stats.stats import analyse

    info = machine_info()
    nb, npoints, n = args.bundles, args.points, args.subjects
    y = np.repeat([0.0, 1.0], [n // 2, n - n // 2])
    values = synthetic_profiles(nb, npoints, n, seed=1, effect=0.03, groups=y)
    target = np.random.default_rng(2).normal(size=n)
    low, high = (int(x) for x in args.upstream_nperm.split(","))
    result = {"machine": info, "shape": {"bundles": nb, "points": npoints, "subjects": n}, "nperm": args.nperm,
              "blas_threads": 1, "ours": {}, "upstream": {}, "speedup": {}}
    cases = (("group", False, y, args.nperm, (low, high)),
             ("group --mc", True, y, args.nperm, (low, high)),
             ("correlation", False, target, args.nperm // 5, (max(1, low // 20), max(2, high // 20))))
    with threadpool_limits(1):
        for name, mc, z, nperm, (k1, k2) in cases:
            kind = "correlation" if name == "correlation" else "group"
            study = _study(values, z, kind)
            ours = _timed(lambda: analyse(study, nperm, 0.05, mc, np.random.default_rng(0)), repeats=2)
            result["ours"][name] = {"nperm": nperm, "seconds": round(ours, 3)}
            print(f"ours     {name:12s} nperm={nperm}: {ours:.2f} s", flush=True)
            if args.no_upstream:
                continue
            t1, t2 = (_timed(lambda k=k: upstream_analysis(values, z, np.empty((n, 0)), kind, mc, k, seed=0))
                      for k in (k1, k2))
            slope = (t2 - t1) / (k2 - k1)
            estimate = t1 + slope * (nperm - k1)
            result["upstream"][name] = {"timed": {str(k1): round(t1, 3), str(k2): round(t2, 3)},
                                        "seconds_per_permutation": round(slope, 6),
                                        "extrapolated_seconds": round(estimate, 1), "nperm": nperm}
            result["speedup"][name] = round(estimate / ours, 1)
            print(f"upstream {name:12s} nperm={k1}: {t1:.2f} s, nperm={k2}: {t2:.2f} s -> {nperm}: {estimate:.1f} s "
                  f"(x{estimate / ours:.0f})", flush=True)
        study = _study(values, y, "group")
        analysed = analyse(study, args.nperm, 0.05, False, np.random.default_rng(0))
        figure = _timed(lambda: render(study, analysed, "png"))
    result["ours"]["figure_png_50_panels_seconds"] = round(figure, 2)
    print(f"ours     figure ({nb} panels, png at 200 dpi): {figure:.2f} s")
    result["load_average_at_end"] = load_average()
    name = f"tractometry-stats-{machine_kind(info)}.json"
    target_path = args.out or Path(__file__).resolve().parent / "results" / name
    target_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"saved {target_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
