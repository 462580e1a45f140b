from __future__ import annotations

from pathlib import Path

import pytest

from export.sample_inputs import EXAMPLE_PEAKS

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def example_peaks_path() -> Path:
    if not EXAMPLE_PEAKS.is_file():
        pytest.skip(f"shared example peaks not present at {EXAMPLE_PEAKS}")
    return EXAMPLE_PEAKS
