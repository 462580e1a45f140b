"""Outliers among a study's subjects, by a robust z-score: the study report's volumes and profiles both use it."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

OUTLIER_Z = 3.5
MAD_SCALE = 1.4826          # MAD of a normal distribution's sample -> its standard deviation
MEAN_AD_SCALE = 1.253314    # mean absolute deviation -> standard deviation (the fallback when MAD is 0)
MIN_SUBJECTS = 5            # fewer subjects with a value: no outlier flags for that value


def robust_z(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Modified z-score ``(x - median) / (1.4826 * MAD)``, median and MAD over the finite values (Iglewicz and
    Hoaglin); never infinite.

    Non-finite inputs (NaN for a missing subject) give NaN, and so does every value when fewer than
    :data:`MIN_SUBJECTS` are finite: at n = 2-3 no subject can be told from the others (a study report once
    flagged all of them). When MAD is 0 (half or more of the values equal the median) the mean absolute deviation
    scaled by 1.2533 takes its place; when that is 0 too, every value is the median and z is 0.
    """
    x = np.asarray(values, dtype=np.float64)
    z = np.full(x.shape, np.nan)
    finite = np.isfinite(x)
    if finite.sum() < MIN_SUBJECTS:
        return z
    median = np.median(x[finite])
    deviation = np.abs(x[finite] - median)
    mad = np.median(deviation)
    scale = MAD_SCALE * mad if mad > 0 else MEAN_AD_SCALE * deviation.mean()
    z[finite] = (x[finite] - median) / scale if scale > 0 else 0.0
    return z
