from __future__ import annotations

from pathlib import Path

import pytest

from export.sample_inputs import EXAMPLE_PEAKS
from tests.run_support import small_bundle

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def example_peaks_path() -> Path:
    if not EXAMPLE_PEAKS.is_file():
        pytest.skip(f"shared example peaks not present at {EXAMPLE_PEAKS}")
    return EXAMPLE_PEAKS


@pytest.fixture(scope="session")
def tract_small(request) -> str:
    """A small (S=16) tract_segmentation bundle from the real export CLI, cached across sessions."""
    return str(small_bundle(request.config))


@pytest.fixture(scope="session")
def endings_small(request) -> str:
    return str(small_bundle(request.config, "endings_segmentation"))
