"""Upstream TractSeg (tractseg==2.10 + torch) as the parity reference: checkpoints in its exact format.

The network, checkpoint and probability helpers live in benchmarks/upstream_net.py (benchmarks use them too);
this module adds the pytest skip for tests. Every user skips cleanly when torch or tractseg is not installed.
"""
from __future__ import annotations

from types import ModuleType

import pytest

from benchmarks.upstream_net import save_upstream_checkpoint, upstream_network, upstream_probabilities

__all__ = ["upstream_network", "save_upstream_checkpoint", "upstream_probabilities", "upstream_modules"]


def upstream_modules() -> tuple[ModuleType, ModuleType, ModuleType]:
    """(data_utils, img_utils, dataset_specific_utils) from tractseg, skipping the test when unavailable."""
    for needed in ("tractseg", "psutil", "joblib", "dipy"):
        pytest.importorskip(needed)
    from tractseg.data import dataset_specific_utils
    from tractseg.libs import data_utils, img_utils
    return data_utils, img_utils, dataset_specific_utils
