from __future__ import annotations

from pathlib import Path

import pytest

from export.sample_inputs import EXAMPLE_PEAKS
from tests.run_support import save_peaks, small_bundle, synthetic_peaks

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


@pytest.fixture(scope="session")
def full_bundle(request) -> Path:
    """The full-size (S=144, batch 4) bundle with every format for cpu and cuda, seed 0: built once, shared by the
    full-size tests (and by the CI's benchmark run, which .ci/run points at it)."""
    from tests.run_support import build_bundle, bundle_cache

    return build_bundle(bundle_cache(request.config), formats=("stablehlo", "iree", "savedmodel", "onnx"),
                        size=144, seed=0, batch_size=4, platforms=("cpu", "cuda"))


@pytest.fixture()
def good(tmp_path) -> Path:
    """A small, valid peak image: tmp_path/in/peaks.nii.gz."""
    return save_peaks(tmp_path / "in" / "peaks.nii.gz", synthetic_peaks((12, 14, 11)))


@pytest.fixture()
def no_network(monkeypatch):
    """The backend must not even be opened: a check that fires later is a failure (exit 3, internal error)."""
    from runtime.pipeline import TractSegPipeline

    def refuse(*args, **kwargs):
        raise AssertionError("the backend was opened: the check did not come before the network")

    monkeypatch.setattr(TractSegPipeline, "open", refuse)
