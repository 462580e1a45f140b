"""The live Equinox model equals upstream's PyTorch UNet_Pytorch_DeepSup on identical weights.

Tolerance: 1e-5 max abs in probability. Both run float32 convolutions with different summation orders
(oneDNN vs XLA); measured differences are ~2e-6, so 1e-5 leaves headroom while any wrong op (a transposed
kernel, a different bilinear rule, a missing LeakyReLU) gives differences of order 0.1.
"""
from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest

from export.model import parameter_count, slice_probabilities
from export.weights import load_upstream
from export.sample_inputs import example_slices, synthetic_slices
from tests.upstream import save_upstream_checkpoint, upstream_network, upstream_probabilities

pytest.importorskip("torch")
pytest.importorskip("tractseg")

TOL = 1e-5
PARAMS = {72: 37_042_584, 144: 37_130_352, 42: 37_006_014}
probabilities = eqx.filter_jit(slice_probabilities)


def assert_parity(net, path, slices: np.ndarray) -> None:
    model = load_upstream(path)
    ours = np.asarray(probabilities(model, jnp.asarray(slices)))
    ref = upstream_probabilities(net, slices)
    assert ours.shape == ref.shape
    # The weights must make the outputs really vary, or parity would be vacuous.
    assert ref.std() > 0.05, f"probabilities nearly constant (std {ref.std():.4f})"
    assert 0.01 < (ref > 0.5).mean() < 0.99
    diff = np.abs(ours - ref).max()
    assert diff <= TOL, f"max abs probability difference {diff:.2e} > {TOL:.0e}"


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_parity_small_slices(tmp_path, legacy):
    net = upstream_network(72, seed=1)
    path = save_upstream_checkpoint(net, tmp_path / "w.npz", legacy=legacy)
    assert_parity(net, path, synthetic_slices(3, 32, seed=2))


@pytest.mark.fullsize
@pytest.mark.parametrize("n_classes", [72, 144, 42])
def test_parity_full_size(tmp_path, n_classes, request):
    net = upstream_network(n_classes, seed=n_classes)
    path = save_upstream_checkpoint(net, tmp_path / "w.npz")
    model = load_upstream(path)
    assert parameter_count(model) == PARAMS[n_classes]
    slices = synthetic_slices(2, 144, seed=3)
    real = example_slices(144, count=2)
    if real is not None:
        slices = np.concatenate([slices, real])
    assert_parity(net, path, slices)
