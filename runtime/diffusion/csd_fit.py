"""Single-shell constrained spherical deconvolution with MRtrix ``dwi2fod csd``'s algorithm and constants, in numpy.

Why not dipy's ``ConstrainedSphericalDeconvModel``: its regularisation differs (no minimum-norm term, a tau = 0.1
threshold, another constraint weight), and its FODs came out sharper than MRtrix's on the same signals and the same
response (l = 6 and 8 bands 1.6-1.7x MRtrix's, first-peak amplitudes 1.33x: measured on the 2.5 mm HCP-like DWI of
``python -m benchmarks diffusion-dice``). TractSeg was trained on ``sh2peaks`` output, amplitudes included, so the
dipy engine fits what MRtrix fits (Tournier et al. 2007; MRtrix 3.0.x ``src/dwi/sdeconv/csd.h``, read, not copied):

- data: the largest shell only, b=0 discarded, no b=0 normalisation; lmax 8 (or the response's, when lower);
- response: zonal SH coefficients (orthonormal m = 0 harmonics, MRtrix's ``response.txt`` convention), turned
  into rotational harmonics RH_l = r_l / sqrt((2l+1)/4pi);
- initial FOD: the pseudo-inverse of the data's SH transform (its diagonal + 1e-2), l = 0, 2, 4 kept, / RH_l;
- forward model M = Y(gradients) RH; minimum-norm term 0.0002 * (M^T M)[0, 0] on the diagonal;
- non-negativity on 300 electrostatic-repulsion directions, weighted 50 * neg_lambda * r_0 / 300, threshold 0;
  per voxel, re-solve with the negative directions added until the set stops changing (at most 50 times).

The SH basis is dipy's ``descoteaux07`` (legacy): an orthonormal basis, so every term above, which depends on
amplitudes and per-l norms only, is the same as in MRtrix's basis. Measured on that DWI with MRtrix's own
``response.txt``: l-band norms equal MRtrix's WM_FODs to 0.1%, first-peak amplitude ratio median 1.000 (p5-p95
0.994-1.007), first-peak angle median 0.11 degrees; the remainder is our 300 directions, not MRtrix's table.
Voxels are solved in batches (numpy's batched ``solve``), not one by one.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

LMAX = 8
NEG_LAMBDA = 1.0
NORM_LAMBDA = 1.0
NORM_LAMBDA_MULTIPLIER = 0.0002
CONSTRAINT_DIRECTIONS = 300
MAX_ITERATIONS = 50
INIT_BANDS = 3  # l = 0, 2, 4
REPULSION_STEPS = 200  # the potential is then within 0.1% of its value after 5,000 (1.8 s instead of 36 s)


@lru_cache(maxsize=1)
def constraint_directions() -> np.ndarray:
    """300 directions spread by electrostatic repulsion (dipy ``disperse_charges``, fixed seed: reproducible)."""
    from dipy.core.sphere import HemiSphere, disperse_charges

    start = np.random.default_rng(300).standard_normal((CONSTRAINT_DIRECTIONS, 3))
    start /= np.linalg.norm(start, axis=1, keepdims=True)
    spread, _ = disperse_charges(HemiSphere(xyz=start), REPULSION_STEPS)
    return np.asarray(spread.vertices, dtype=float)


def zonal_response(signals: np.ndarray, gradients: np.ndarray, fibre_directions: np.ndarray,
                   lmax: int = LMAX) -> np.ndarray:
    """Zonal SH coefficients (l = 0, 2, ..., lmax) of the single-fibre response: every voxel's signals (V, N) at
    the gradients (N, 3), as a function of the angle to its fibre direction (V, 3), pooled into one least-squares
    fit (what ``amp2response`` does, without its optional shape constraints)."""
    from scipy.special import eval_legendre

    cosine = np.abs(np.asarray(fibre_directions, float) @ np.asarray(gradients, float).T).ravel()
    degrees = np.arange(0, lmax + 1, 2)
    design = np.stack([np.sqrt((2 * l + 1) / (4 * np.pi)) * eval_legendre(l, cosine) for l in degrees], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, np.asarray(signals, float).ravel(), rcond=None)
    return coefficients


@dataclass(frozen=True)
class CSD:
    """The precomputed matrices of one gradient set and response; ``fit`` solves a batch of voxels."""

    init: np.ndarray  # (n_SH, N): signals -> initial FOD
    forward: np.ndarray  # (N, n_SH): M
    gram: np.ndarray  # (n_SH, n_SH): M^T M + minimum-norm term
    constraint: np.ndarray  # (D, n_SH): weighted SH at the constraint directions

    @classmethod
    def build(cls, gradients: np.ndarray, response: np.ndarray, lmax: int = LMAX) -> CSD:
        """``gradients``: (N, 3) unit directions of the shell; ``response``: zonal SH coefficients."""
        response = np.asarray(response, float)
        lmax = min(lmax, 2 * (len(response) - 1))
        if lmax < 2:
            raise ValueError("the response has no anisotropic terms")
        from runtime.diffusion.sh_peaks import SHEvaluator

        evaluator = SHEvaluator(lmax)  # dipy descoteaux07 (legacy, orthonormal)
        degrees = evaluator.l
        rh = np.zeros(lmax // 2 + 1)
        n = min(len(response), len(rh))
        rh[:n] = response[:n] / np.sqrt((2 * np.arange(0, 2 * n, 2) + 1) / (4 * np.pi))
        if np.any(rh == 0):
            raise ValueError("the response has a zero rotational harmonic up to lmax")
        basis = evaluator.basis(gradients)
        with_ridge = basis.copy()
        k = np.arange(min(basis.shape))
        with_ridge[k, k] += 1e-2
        keep = np.where(degrees // 2 < INIT_BANDS, 1.0, 0.0)
        init = np.linalg.pinv(with_ridge) * (keep / rh[degrees // 2])[:, None]
        forward = basis * rh[degrees // 2][None, :]
        gram = forward.T @ forward
        gram += NORM_LAMBDA * NORM_LAMBDA_MULTIPLIER * gram[0, 0] * np.eye(len(degrees))
        directions = constraint_directions()
        constraint = evaluator.basis(directions) * (NEG_LAMBDA * 50.0 * response[0] / len(directions))
        return cls(init, forward, gram, constraint)

    def fit(self, signals: np.ndarray) -> np.ndarray:
        """(V, N) signals of the shell -> (V, n_SH) FOD coefficients (dipy descoteaux07 legacy basis)."""
        signals = np.asarray(signals, float)
        fod = signals @ self.init.T
        projected = signals @ self.forward
        previous = np.zeros((len(signals), len(self.constraint)))
        active = np.arange(len(signals))
        n = self.constraint.shape[1]
        outer = (self.constraint[:, :, None] * self.constraint[:, None, :]).reshape(len(self.constraint), n * n)
        for iteration in range(MAX_ITERATIONS):
            negative = (fod[active] @ self.constraint.T < 0.0).astype(float)
            if iteration:  # MRtrix starts from an impossible set, so the first pass always solves
                changed = np.any(negative != previous[active], axis=1)
                active, negative = active[changed], negative[changed]
                if not len(active):
                    break
            previous[active] = negative
            system = self.gram[None] + (negative @ outer).reshape(len(active), *self.gram.shape)
            fod[active] = np.linalg.solve(system, projected[active][..., None])[..., 0]
        return fod
