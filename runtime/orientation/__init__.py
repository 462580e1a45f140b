"""Orientation checks: catch peaks or b-vectors with one axis's sign wrong before they give plausible, wrong bundles.

The library calls::

    check_peaks(data, affine) -> OrientationResult        # peaks (X, Y, Z, 9) in world axes, NaN already 0
    check_bvecs(dwi, bvals=None, bvecs=None, brain_mask=None) -> OrientationResult   # needs dipy
    apply_flip(data, affine, axis) / flip_bvecs(bvecs, axis, affine=None)           # make / undo a flip

``OrientationResult.flipped`` is True only for a confident verdict that an axis is flipped (the case to warn about).
The score and its calibration: :mod:`runtime.orientation.coherence`; what a flip means for peaks and FSL bvecs:
:mod:`runtime.orientation.flips`. ``check_bvecs`` lives in :mod:`runtime.orientation.dwi` and is imported lazily
here so that the peaks check does not import the raw-DWI modules.
"""
from __future__ import annotations

from typing import Any

from runtime.orientation.coherence import check_peaks
from runtime.orientation.flips import apply_flip, flip_bvecs
from runtime.orientation.result import FLIPS, OrientationResult

__all__ = ["FLIPS", "OrientationResult", "apply_flip", "check_bvecs", "check_peaks", "flip_bvecs"]


def check_bvecs(*args: Any, **kwargs: Any) -> OrientationResult:
    """:func:`runtime.orientation.dwi.check_bvecs` (see there)."""
    from runtime.orientation.dwi import check_bvecs as check

    return check(*args, **kwargs)
