"""A numpy float64 reference of the exported function, for a bundle made without the export toolchain.

The export checks every artifact against the live JAX model and stores the live model's outputs for the bundle's
self-check. Where there is no JAX (a deploy install filling a shipped graph with upstream's weights), this is the
live model: upstream's UNet_Pytorch_DeepSup (n_filt 64) written out once more, independently of the graph, in numpy
float64 from the state_dict itself (convolutions as nine shifted matrix products, the k2/s2 transposed
convolution as one contraction, max-pool, LeakyReLU 0.01, x2 bilinear (align_corners=False) or nearest
upsampling, the per-slice normalisation and the sigmoid; for the dropout model, pool_4 multiplied by the mask),
so a graph that computes something else, or a weight in the wrong slot, shows as drift. float64 makes it the more
exact of the two: the drift it records is the ONNX backend's own float32 error (tests/test_weights_offline.py
checks it against the live JAX model too).
"""
from __future__ import annotations

import numpy as np

LEAKY_SLOPE = 0.01
NORM_EPS = 1e-7
# (name, kind) in upstream's order: conv3 = Conv2d 3x3 + LeakyReLU, deconv = ConvTranspose2d 2/2 + LeakyReLU,
# conv1 = a bare 1x1 (export/model.py's layer_table)
ENCODER = ("contr_1_1", "contr_1_2", "contr_2_1", "contr_2_2", "contr_3_1", "contr_3_2", "contr_4_1", "contr_4_2",
           "encode_1", "encode_2")


def _key(name: str, param: str) -> str:
    return f"{name}.{param}" if name.startswith(("output_", "conv_5")) else f"{name}.0.{param}"


class Reference:
    """The exported function of a model from its upstream-named state_dict, in float64."""

    def __init__(self, state: dict[str, np.ndarray], upsample: str = "bilinear", linear: bool = False):
        self.state, self.upsample, self.linear = state, upsample, linear

    def param(self, name: str, param: str) -> np.ndarray:
        """A layer's weight or bias as the JAX port loads it (float32), in float64: converted per use, so only the
        layer in use is held twice (0.3 GB less at full size)."""
        return np.asarray(self.state[_key(name, param)], dtype=np.float32).astype(np.float64)

    def conv(self, name: str, x: np.ndarray, relu: bool = True) -> np.ndarray:
        """Conv2d 'same' (3x3 padding 1, or 1x1) on (B, C, H, W), LeakyReLU unless a bare 1x1."""
        w = np.ascontiguousarray(self.param(name, "weight").transpose(2, 3, 0, 1))  # (k, k, O, C): the taps
        b = self.param(name, "bias")
        k = w.shape[0]
        height, width = x.shape[2:]
        padded = np.pad(x, ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2))) if k > 1 else x
        y = np.zeros((w.shape[2], x.shape[0], height, width))
        for i in range(k):
            for j in range(k):
                y += np.tensordot(w[i, j], padded[:, :, i:i + height, j:j + width], axes=(1, 1))
        y = y.transpose(1, 0, 2, 3) + b[None, :, None, None]
        return leaky_relu(y) if relu else y

    def deconv(self, name: str, x: np.ndarray) -> np.ndarray:
        """ConvTranspose2d(kernel 2, stride 2) + LeakyReLU:
        out[:, o, 2i+di, 2j+dj] = sum_c x[:, c, i, j] w[c, o, di, dj]."""
        w, b = self.param(name, "weight"), self.param(name, "bias")
        batch, _, height, width = x.shape
        y = np.tensordot(x, w, axes=(1, 0))  # (B, H, W, O, 2, 2)
        y = y.transpose(0, 3, 1, 4, 2, 5).reshape(batch, w.shape[1], 2 * height, 2 * width)
        return leaky_relu(y + b[None, :, None, None])

    def network(self, x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """``mask``: the dropout model's, multiplying pool_4 (export/model.py's ``bottleneck_mask``)."""
        skips = []
        h = x
        for index, name in enumerate(ENCODER):
            h = self.conv(name, h)
            if index % 2 and index < len(ENCODER) - 2:
                skips.append(h)
                h = max_pool_2x2(h)
                if mask is not None and len(skips) == 4:  # h is pool_4
                    h = h * np.asarray(mask, dtype=np.float32).astype(np.float64)
        c12, c22, c32, c42 = skips
        up = upsample_bilinear_x2 if self.upsample == "bilinear" else upsample_nearest_x2
        concat1 = np.concatenate([self.deconv("deconv_1", h), c42], axis=1)
        e12 = self.conv("expand_1_2", self.conv("expand_1_1", concat1))
        concat2 = np.concatenate([self.deconv("deconv_2", e12), c32], axis=1)
        e22 = self.conv("expand_2_2", self.conv("expand_2_1", concat2))
        out2_up = up(self.conv("output_2", concat2, relu=False))
        concat3 = np.concatenate([self.deconv("deconv_3", e22), c22], axis=1)
        e32 = self.conv("expand_3_2", self.conv("expand_3_1", concat3))
        out3_up = up(out2_up + self.conv("output_3", concat3, relu=False))
        concat4 = np.concatenate([self.deconv("deconv_4", e32), c12], axis=1)
        e42 = self.conv("expand_4_2", self.conv("expand_4_1", concat4))
        return out3_up + self.conv("conv_5", e42, relu=False)

    def __call__(self, raw_slices: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Raw slices (B, 9, S, S) -> normalise -> network (pool_4 times ``mask`` when given: the dropout model)
        -> sigmoid (none when linear), float64."""
        x = np.asarray(raw_slices, dtype=np.float64)
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        std = np.sqrt(np.square(x - mean).mean(axis=(1, 2, 3), keepdims=True))
        out = self.network((x - mean) / (std + NORM_EPS), mask)
        return out if self.linear else 1.0 / (1.0 + np.exp(-out))


def leaky_relu(x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, x, LEAKY_SLOPE * x)


def max_pool_2x2(x: np.ndarray) -> np.ndarray:
    b, c, h, w = x.shape
    return x.reshape(b, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def _upsample_axis_x2(x: np.ndarray, axis: int) -> np.ndarray:
    """torch's linear x2, align_corners=False: output 2i samples i - 1/4, 2i+1 samples i + 1/4, edges clamped."""
    n = x.shape[axis]
    prev = np.take(x, np.maximum(np.arange(n) - 1, 0), axis=axis)
    nxt = np.take(x, np.minimum(np.arange(n) + 1, n - 1), axis=axis)
    stacked = np.stack([0.75 * x + 0.25 * prev, 0.75 * x + 0.25 * nxt], axis=axis + 1)
    shape = list(x.shape)
    shape[axis] = 2 * n
    return stacked.reshape(shape)


def upsample_bilinear_x2(x: np.ndarray) -> np.ndarray:
    return _upsample_axis_x2(_upsample_axis_x2(x, 2), 3)


def upsample_nearest_x2(x: np.ndarray) -> np.ndarray:
    return x.repeat(2, axis=2).repeat(2, axis=3)


def synthetic_slices(count: int, size: int, seed: int) -> np.ndarray:
    """Peak-like raw slices: normal(0, 0.4) vectors inside a disc, zero outside (the check batches' slices; the
    export's too, export/sample_inputs.py)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    inside = np.hypot(yy - size / 2, xx - size / 2) < size * 0.4
    x = rng.normal(0, 0.4, (count, 9, size, size)).astype(np.float32)
    return x * inside[None, None]


def check_batches(batch_size: int, size: int) -> list[np.ndarray]:
    """Two synthetic batches (seeds 0 and 1): export/sample_inputs.py's check batches without the example peaks."""
    return [synthetic_slices(batch_size, size, 0), synthetic_slices(batch_size, size, 1)]
