from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_PEAKS = REPO.parent / "shared" / "data" / "tractseg_example_peaks_2.5mm.nii.gz"


@pytest.fixture(scope="session")
def example_peaks_path() -> Path:
    if not EXAMPLE_PEAKS.is_file():
        pytest.skip(f"shared example peaks not present at {EXAMPLE_PEAKS}")
    return EXAMPLE_PEAKS
