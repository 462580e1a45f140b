"""Outliers among a study's subjects, by a robust z-score: the study report's volumes and profiles both use it."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

OUTLIER_Z = 3.5
MAD_SCALE = 1.4826          # MAD of a normal distribution's sample -> its standard deviation


def robust_z(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Modified z-score ``(x - median) / (1.4826 * MAD)``, median and MAD over the finite values.

    Non-finite inputs (NaN for a missing subject) give NaN. When MAD is 0 (half or more of the values equal the
    median): z is 0 where x equals the median and +/-inf (the sign of x - median) elsewhere, so any departure from
    a constant majority counts as an outlier.
    """
    x = np.asarray(values, dtype=np.float64)
    z = np.full(x.shape, np.nan)
    finite = np.isfinite(x)
    if not finite.any():
        return z
    median = np.median(x[finite])
    mad = np.median(np.abs(x[finite] - median))
    if mad > 0:
        z[finite] = (x[finite] - median) / (MAD_SCALE * mad)
    else:
        z[finite] = np.where(x[finite] == median, 0.0, np.where(x[finite] > median, np.inf, -np.inf))
    return z
