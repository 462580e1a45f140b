"""Weights for the live model: upstream checkpoints in, a torch-free safetensors form out, and demo weights.

- `load_upstream(path)`: upstream's `torch.save({"unet": state_dict})` file (named .npz, either torch format),
  read with `torch.load(weights_only=True)`, strict on keys and shapes. torch is imported only here.
- `save_weights` / `load_weights`: the same state_dict as safetensors (float32, upstream key names), no pickle.
- `random_state_dict(seed, n_classes)`: seeded He-scaled random weights, NOT anatomical: for the demo and tests.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from runtime.io.checksum import sha256_of
from export.model import Conv, Deconv, TractSeg, layer_table, param_shape, state_dict_key

StateDict = dict[str, np.ndarray]


class WeightsError(ValueError):
    """A checkpoint that cannot be loaded; the message is one line naming the file and the problem."""


def expected_shapes(n_classes: int) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for name, kind, cin, cout in layer_table(n_classes):
        for param in ("weight", "bias"):
            shapes[state_dict_key(name, kind, param)] = param_shape(kind, cin, cout, param)
    return shapes


def infer_n_classes(state: StateDict, source: str) -> int:
    if "conv_5.bias" not in state:
        raise WeightsError(f"{source}: missing key 'conv_5.bias' (not a TractSeg UNet_Pytorch_DeepSup state_dict)")
    return int(np.shape(state["conv_5.bias"])[0])


def model_from_state_dict(state: StateDict, source: str = "<state_dict>", upsample: str = "bilinear",
                          linear: bool = False) -> TractSeg:
    """Build the Equinox model from an upstream-named state_dict, strict on keys and shapes (``upsample`` and
    ``linear``: the model family's, see :class:`export.model.TractSeg`)."""
    n_classes = infer_n_classes(state, source)
    shapes = expected_shapes(n_classes)
    missing = sorted(set(shapes) - set(state))
    unexpected = sorted(set(state) - set(shapes))
    if missing or unexpected:
        raise WeightsError(f"{source}: state_dict keys differ from UNet_Pytorch_DeepSup "
                           f"(missing: {missing[:5]}{'...' if len(missing) > 5 else ''}; "
                           f"unexpected: {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})")
    for key, shape in shapes.items():
        got = tuple(np.shape(state[key]))
        if got != shape:
            raise WeightsError(f"{source}: key {key!r} has shape {got}, expected {shape} "
                               f"(for {n_classes} classes)")
    layers = {}
    for name, kind, _, _ in layer_table(n_classes):
        w = jnp.asarray(np.asarray(state[state_dict_key(name, kind, "weight")], dtype=np.float32))
        b = jnp.asarray(np.asarray(state[state_dict_key(name, kind, "bias")], dtype=np.float32))
        layers[name] = Deconv(w, b) if kind == "deconv" else Conv(w, b)
    return TractSeg(layers=layers, n_classes=n_classes, upsample=upsample, linear=linear)


def read_upstream_state_dict(path: str | Path) -> StateDict:
    """The {"unet": state_dict} of an upstream checkpoint as float32 numpy arrays."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{path}: not a readable torch checkpoint ({first_line})") from None
    if not isinstance(checkpoint, dict) or "unet" not in checkpoint:
        keys = list(checkpoint)[:5] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise WeightsError(f"{path}: expected a dict with key 'unet' (upstream's format), got {keys}")
    state = checkpoint["unet"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: checkpoint['unet'] is {type(state).__name__}, expected a state_dict")
    out = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise WeightsError(f"{path}: state_dict entry {k!r} is {type(v).__name__}, expected a tensor")
        out[k] = v.detach().to(torch.float32).numpy()
    return out


def load_upstream(path: str | Path) -> TractSeg:
    """Load an upstream TractSeg checkpoint into the live Equinox model."""
    return model_from_state_dict(read_upstream_state_dict(path), str(path))


def save_weights(state: StateDict, path: str | Path, metadata: dict[str, str] | None = None) -> str:
    """Write a state_dict as safetensors (atomically); returns the file's sha256."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}, str(tmp),
              metadata=metadata)
    tmp.replace(path)
    return sha256_of(path)


def load_weights_state_dict(path: str | Path) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None


def load_weights(path: str | Path) -> TractSeg:
    """Load converted weights (safetensors, upstream key names): no torch needed."""
    return model_from_state_dict(load_weights_state_dict(path), str(path))


def random_state_dict(seed: int, n_classes: int) -> StateDict:
    """Seeded random weights, NOT anatomical, scaled so a 23-layer net gives outputs that really vary.

    PyTorch's default init (kaiming_uniform a=sqrt(5): U(+-1/sqrt(fan_in))) shrinks the signal ~6x per
    conv + LeakyReLU; scaling by sqrt(6) gives He init (Var = 2/fan_in). Biases keep torch's U(+-1/sqrt(fan_in)).
    fan_in is torch's: weight.shape[1] * k * k (for ConvTranspose2d that is out_channels * k * k).
    """
    rng = np.random.default_rng(seed)
    state = {}
    for name, kind, cin, cout in layer_table(n_classes):
        w_shape = param_shape(kind, cin, cout, "weight")
        fan_in = w_shape[1] * w_shape[2] * w_shape[3]
        bound = 1.0 / np.sqrt(fan_in)
        state[state_dict_key(name, kind, "weight")] = rng.uniform(
            -bound * np.sqrt(6.0), bound * np.sqrt(6.0), w_shape).astype(np.float32)
        state[state_dict_key(name, kind, "bias")] = rng.uniform(-bound, bound, (cout,)).astype(np.float32)
    return state
