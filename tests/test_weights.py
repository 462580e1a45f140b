"""Weights: upstream checkpoints load strictly, bad ones give one-line errors, converted and demo weights."""
from __future__ import annotations

import numpy as np
import pytest

from export.model import parameter_count
from export.weights import (WeightsError, expected_shapes, load_upstream, load_weights, model_from_state_dict,
                            random_state_dict, read_upstream_state_dict, save_weights)

torch = pytest.importorskip("torch")

PARAMS = {72: 37_042_584, 144: 37_130_352, 42: 37_006_014}


@pytest.mark.parametrize("n_classes", sorted(PARAMS))
def test_parameter_counts(n_classes):
    assert parameter_count(model_from_state_dict(random_state_dict(0, n_classes))) == PARAMS[n_classes]
    assert sum(int(np.prod(s)) for s in expected_shapes(n_classes).values()) == PARAMS[n_classes]


def small_checkpoint(tmp_path, state=None, name="w.npz"):
    state = random_state_dict(0, 72) if state is None else state
    path = tmp_path / name
    torch.save({"unet": {k: torch.from_numpy(v) for k, v in state.items()}}, path)
    return path


def assert_one_line(excinfo, *fragments):
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_missing_key(tmp_path):
    state = random_state_dict(0, 72)
    del state["encode_1.0.weight"]
    with pytest.raises(WeightsError) as e:
        load_upstream(small_checkpoint(tmp_path, state))
    assert_one_line(e, "w.npz", "encode_1.0.weight", "missing")


def test_unexpected_key(tmp_path):
    state = random_state_dict(0, 72)
    state["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(WeightsError) as e:
        load_upstream(small_checkpoint(tmp_path, state))
    assert_one_line(e, "extra.weight", "unexpected")


def test_wrong_shape_names_key_and_shapes(tmp_path):
    state = random_state_dict(0, 72)
    state["contr_2_1.0.weight"] = np.zeros((128, 64, 5, 5), np.float32)
    with pytest.raises(WeightsError) as e:
        load_upstream(small_checkpoint(tmp_path, state))
    assert_one_line(e, "contr_2_1.0.weight", "(128, 64, 5, 5)", "(128, 64, 3, 3)")


def test_truncated_file(tmp_path):
    path = small_checkpoint(tmp_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError) as e:
        load_upstream(path)
    assert_one_line(e, str(path), "not a readable torch checkpoint")


def test_not_a_torch_file(tmp_path):
    path = tmp_path / "weights.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(WeightsError) as e:
        load_upstream(path)
    assert_one_line(e, str(path))


def test_not_upstream_layout(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"model": {}}, path)
    with pytest.raises(WeightsError) as e:
        load_upstream(path)
    assert_one_line(e, "'unet'")


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError) as e:
        load_upstream(tmp_path / "absent.npz")
    assert_one_line(e, "absent.npz", "no such file")


def test_safetensors_round_trip_is_exact_and_torch_free(tmp_path):
    state = read_upstream_state_dict(small_checkpoint(tmp_path, name="legacy.npz"))
    path = tmp_path / "w.safetensors"
    digest = save_weights(state, path)
    assert len(digest) == 64
    loaded = load_weights(path)
    original = model_from_state_dict(state)
    for name, layer in original.layers.items():
        np.testing.assert_array_equal(np.asarray(loaded.layers[name].weight), np.asarray(layer.weight))
        np.testing.assert_array_equal(np.asarray(loaded.layers[name].bias), np.asarray(layer.bias))


def test_bad_safetensors(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"not safetensors at all")
    with pytest.raises(WeightsError) as e:
        load_weights(path)
    assert_one_line(e, "w.safetensors")


def test_random_weights_are_seeded():
    a, b, c = random_state_dict(3, 42), random_state_dict(3, 42), random_state_dict(4, 42)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["conv_5.weight"], c["conv_5.weight"])
