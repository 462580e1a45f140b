"""dm_regression (bundle density maps): exported and run by the JAX-free runtime, equal to upstream's own code on
identical weights (an upstream-format checkpoint), on a flipped 2 mm volume at cube size 16.

Criteria (issue 17): values within 1e-4 of upstream's; where one side is zeroed by the < 0.01 threshold and the
other is not, the value lies within 1e-4 of the threshold (a tie; counted).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.models.bundles import model_for
from tests.no_jax import run_module
from tests.run_support import read, refused, save_peaks, synthetic_peaks
from tests.tom_support import FLIPPED, export_bundle, read_maps, threshold_ties, upstream_run, weights_dir

SIZE = 16
SHAPE = (22, 26, 19)
DM = model_for("dm_regression")


@pytest.fixture(scope="module")
def dm_bundle(request) -> Path:
    checkpoint = weights_dir(request.config) / DM.local_name
    return export_bundle(request.config, "dm_regression", ["--weights", str(checkpoint)], SIZE)


@pytest.fixture(scope="module")
def peaks(tmp_path_factory) -> Path:
    return save_peaks(tmp_path_factory.mktemp("dm") / "peaks.nii.gz", synthetic_peaks(SHAPE, seed=8), FLIPPED)


@pytest.fixture(scope="module")
def expected(peaks, request) -> np.ndarray:
    """Upstream's density maps for ``peaks``: (X, Y, Z, 72) after bin/TractSeg's threshold."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        return upstream_run(monkeypatch, peaks, weights_dir(request.config), SIZE, "dm_regression")


def test_dm_equals_upstream_without_jax(dm_bundle, peaks, expected, tmp_path):
    out = tmp_path / "out"
    done = run_module("runtime.run", str(peaks), "-o", str(out), "--artifacts", str(dm_bundle),
                      "--output_type", "dm_regression", "--quiet", timeout=600)
    assert done.returncode == 0, done.stderr
    ours = read_maps(out)
    assert ours.dtype == np.float32 == expected.dtype and ours.shape == expected.shape
    one_side = threshold_ties(ours, expected, 0.01)
    both = ~one_side
    worst = float(np.abs(ours[both] - expected[both]).max())
    print(f"dm_regression parity: max abs {worst:.2e}, {int(one_side.sum())} threshold ties, "
          f"{int((expected != 0).sum())} nonzero voxels of {expected.size}")
    assert worst <= 1e-4
    nonzero = float((expected != 0).mean())
    assert 0.05 < nonzero < 0.95 and expected[expected != 0].std() > 0.05, nonzero  # not vacuous


def test_rescale_dm_equals_upstreams_scaling(dm_bundle, peaks, expected, tmp_path):
    """--rescale_dm: upstream's own img_utils.scale_to_range(seg, range(0, 100)) applied to upstream's maps (the
    whole 4D output's min and max; [0, 1] in effect). Tolerance: the 1e-4 of the raw maps divided by the range
    (> 1 here), plus float32 rounding of the division."""
    from tractseg.libs.img_utils import scale_to_range

    from runtime.run import main

    out = tmp_path / "out"
    assert main([str(peaks), "-o", str(out), "--artifacts", str(dm_bundle), "--output_type", "dm_regression",
                 "--rescale_dm", "--quiet"]) == 0
    ours, theirs = read_maps(out), scale_to_range(expected, range(0, 100))
    assert theirs.dtype == np.float32 and theirs.min() == 0 and theirs.max() == 1 and expected.max() > 1
    assert ours.min() == 0 and ours.max() == 1
    one_side = threshold_ties(ours, theirs, float(0.01 / expected.max()))
    assert float(np.abs(ours - theirs)[~one_side].max()) <= 1e-4


def test_rescale_dm_refused_for_other_output_types(tract_small, peaks, tmp_path, capsys):
    refused(capsys, tmp_path, peaks, "-o", tmp_path / "out", "--artifacts", tract_small, "--rescale_dm",
            expect="--rescale_dm is only used with --output_type dm_regression", code=2)


def test_dm_single_output_file(dm_bundle, peaks, tmp_path, capsys):
    from runtime.run import main

    out = tmp_path / "out"
    assert main([str(peaks), "-o", str(out), "--artifacts", str(dm_bundle), "--output_type", "dm_regression",
                 "--single_output_file", "--quiet"]) == 0
    data, image = read(out / "bundle_density_maps.nii.gz")
    assert data.shape == (*SHAPE, len(DM.bundles)) and data.dtype == np.float32
    assert data.min() == 0 and not ((data > 0) & (data < 0.01)).any()  # upstream's threshold applied


def test_dm_bundle_refused_for_tract_segmentation_and_reverse(dm_bundle, tract_small, peaks, tmp_path, capsys):
    refused(capsys, tmp_path, peaks, "-o", tmp_path / "out", "--artifacts", dm_bundle,
            expect="bundle is dm_regression/TractQuerier+ with 72 classes, but tract_segmentation")
    refused(capsys, tmp_path, peaks, "-o", tmp_path / "out", "--artifacts", tract_small, "--output_type",
            "dm_regression", expect="but dm_regression/TractQuerier+ with 72 classes was requested")
