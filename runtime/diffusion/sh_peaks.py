"""Peaks of a spherical-harmonic FOD in MRtrix ``sh2peaks``' output convention, for the dipy engine.

``sh2peaks`` (MRtrix 3.0.3, ``cmd/sh2peaks.cpp``) writes, per voxel, up to 3 peaks as ``amplitude * unit direction``
(x, y, z in scanner / world coordinates: the frame of the gradients after ``-fslgrad``), sorted by amplitude,
found by a Newton search from 60 fixed seed directions, a peak within ``|dot| > 0.99`` of one already found being
dropped, with no amplitude threshold; slots with no peak, voxels outside the mask and voxels whose FOD has only an
l=0 term are NaN. Here: every local maximum of the FOD on a ~3.8 degree sphere (dipy ``repulsion724``
subdivided once), refined by Newton steps on the sphere (finite-difference gradient and Hessian in the tangent
plane), duplicates within ``|dot| > 0.99`` dropped, the 3 largest kept, amplitude = FOD value at the refined
direction, NaN in the same places. The sign of a direction is arbitrary for an antipodally symmetric FOD;
``sh2peaks`` returns the copy its seed (nearly all in the z >= 0 hemisphere) converged to, so we return the z >= 0
copy.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

DOT_THRESHOLD = 0.99  # sh2peaks.cpp
N_PEAKS = 3  # sh2peaks' default -num
NEWTON_STEPS = 4
STEP_RAD = 0.01


class SHEvaluator:
    """FOD amplitudes of dipy ``descoteaux07`` (legacy) coefficients at arbitrary unit directions.

    The basis is evaluated here with the associated-Legendre recurrences in numpy, not with dipy's
    ``real_sh_descoteaux_from_index`` (SciPy's ``sph_harm_y`` took 80% of the peak search's time); the two are
    equal to rounding (``tests/test_diffusion.py::test_sh_basis_equals_dipys``). Column j is degree l_j, order
    m_j (dipy's ``sph_harm_ind_list`` order): N P_l^|m|(cos theta) times 1 (m = 0), sqrt(2) cos(|m| phi) (m < 0:
    the legacy basis takes Re Y_l^|m|) or sqrt(2) sin(m phi) (m > 0), Condon-Shortley phase in P as in SciPy."""

    def __init__(self, sh_order_max: int) -> None:
        from dipy.reconst.shm import sph_harm_ind_list

        self.m, self.l = sph_harm_ind_list(sh_order_max)
        self.lmax = int(sh_order_max)
        k = np.abs(self.m)
        log_ratio = np.array([np.sum(np.log(np.arange(l - a + 1, l + a + 1))) for l, a in zip(self.l, k)])
        real_part = np.where(self.m == 0, 1.0, np.sqrt(2))
        self.norm = np.sqrt((2 * self.l + 1) / (4 * np.pi) * np.exp(-log_ratio)) * real_part

    def _legendre(self, x: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
        """P_l^m(x) for 0 <= m <= l <= lmax, Condon-Shortley phase included."""
        s = np.sqrt(np.clip(1.0 - x * x, 0.0, None))
        p: dict[tuple[int, int], np.ndarray] = {}
        diagonal = np.ones_like(x)
        for m in range(self.lmax + 1):
            if m:
                diagonal = -(2 * m - 1) * s * diagonal
            p[(m, m)] = diagonal
            if m < self.lmax:
                p[(m + 1, m)] = (2 * m + 1) * x * diagonal
            for l in range(m + 2, self.lmax + 1):
                p[(l, m)] = ((2 * l - 1) * x * p[(l - 1, m)] - (l + m - 1) * p[(l - 2, m)]) / (l - m)
        return p

    def basis(self, directions: np.ndarray) -> np.ndarray:
        d = np.asarray(directions, dtype=float)
        d = d / np.linalg.norm(d, axis=1, keepdims=True)
        p = self._legendre(np.clip(d[:, 2], -1.0, 1.0))
        phi = np.arctan2(d[:, 1], d[:, 0])
        columns = []
        for l, m in zip(self.l, self.m):
            angular = 1.0 if m == 0 else (np.cos(-m * phi) if m < 0 else np.sin(m * phi))
            columns.append(p[(int(l), abs(int(m)))] * angular)
        return np.stack(columns, axis=1) * self.norm[None, :]

    def amplitude(self, coeffs: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """One amplitude per row: coeffs (K, C), directions (K, 3)."""
        return np.einsum("kc,kc->k", self.basis(directions), coeffs)


@lru_cache(maxsize=1)
def search_sphere():
    """The 1,442-vertex search sphere, built once per process (the dipy engine asks for it in every chunk)."""
    from dipy.data import get_sphere

    return get_sphere(name="repulsion724").subdivide(n=1)


def _tangent_basis(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    helper = np.where(np.abs(d[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    e1 = np.cross(d, helper)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    return e1, np.cross(d, e1)


def refine(evaluator: SHEvaluator, coeffs: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Newton ascent on the sphere for each (coefficient row, start direction) pair; returns directions and
    amplitudes. A step whose Hessian is not negative definite becomes a small gradient step; steps are capped at
    0.1 rad, and a step that lowers the amplitude is not taken."""
    d = directions.copy()
    h = STEP_RAD
    f0 = evaluator.amplitude(coeffs, d)
    for _ in range(NEWTON_STEPS):
        e1, e2 = _tangent_basis(d)
        probes = [d + h * e1, d - h * e1, d + h * e2, d - h * e2, d + h * (e1 + e2)]
        fp = [evaluator.amplitude(coeffs, p / np.linalg.norm(p, axis=1, keepdims=True)) for p in probes]
        g = np.stack([(fp[0] - fp[1]) / (2 * h), (fp[2] - fp[3]) / (2 * h)], axis=1)
        h11 = (fp[0] - 2 * f0 + fp[1]) / h ** 2
        h22 = (fp[2] - 2 * f0 + fp[3]) / h ** 2
        h12 = (fp[4] - fp[0] - fp[2] + f0) / h ** 2
        det = h11 * h22 - h12 ** 2
        concave = (h11 < 0) & (det > 0)
        safe = np.where(concave, det, 1.0)
        newton = -np.stack([h22 * g[:, 0] - h12 * g[:, 1], -h12 * g[:, 0] + h11 * g[:, 1]], axis=1) / safe[:, None]
        step = np.where(concave[:, None], newton, 0.01 * g / (np.linalg.norm(g, axis=1, keepdims=True) + 1e-12))
        norm = np.linalg.norm(step, axis=1, keepdims=True)
        step = np.where(norm > 0.1, step * 0.1 / np.maximum(norm, 1e-12), step)
        candidate = d + step[:, :1] * e1 + step[:, 1:] * e2
        candidate /= np.linalg.norm(candidate, axis=1, keepdims=True)
        f1 = evaluator.amplitude(coeffs, candidate)
        better = f1 >= f0
        d = np.where(better[:, None], candidate, d)
        f0 = np.where(better, f1, f0)
    return d, f0


def peaks_sh2peaks_style(coeffs: np.ndarray, sphere, evaluator: SHEvaluator) -> np.ndarray:
    """(V, C) FOD coefficients -> (V, 9) float32 peaks, sh2peaks' convention (see the module docstring)."""
    from dipy.direction.peaks import peak_directions

    out = np.full((coeffs.shape[0], 3 * N_PEAKS), np.nan, dtype=np.float32)
    if coeffs.shape[0] == 0:
        return out
    values = coeffs @ evaluator.basis(sphere.vertices).T
    min_angle = float(np.degrees(np.arccos(DOT_THRESHOLD)))
    rows: list[int] = []
    starts: list[np.ndarray] = []
    for v in range(coeffs.shape[0]):
        if not np.any(coeffs[v, 1:]):  # sh2peaks: only an l=0 term (or all zero) -> no peaks
            continue
        dirs, _, _ = peak_directions(values[v], sphere, relative_peak_threshold=0.0, min_separation_angle=min_angle)
        rows.extend([v] * len(dirs))
        starts.extend(dirs)
    if not rows:
        return out
    row = np.asarray(rows)
    dirs, amps = refine(evaluator, coeffs[row], np.asarray(starts, dtype=float))
    dirs[dirs[:, 2] < 0] *= -1
    order = np.lexsort((-amps, row))
    kept = np.zeros(coeffs.shape[0], dtype=int)
    found: dict[int, list[np.ndarray]] = {}
    for i in order:
        v = int(row[i])
        if kept[v] == N_PEAKS or any(abs(float(dirs[i] @ prev)) > DOT_THRESHOLD for prev in found.get(v, [])):
            continue
        found.setdefault(v, []).append(dirs[i])
        out[v, 3 * kept[v]:3 * kept[v] + 3] = amps[i] * dirs[i]
        kept[v] += 1
    return out
