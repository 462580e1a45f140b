"""Winograd F(m x m, 3x3) for the U-Net's 3x3, stride-1, padding-1 convolutions, written into the exported graph.

A 3x3 convolution over an (m+2) x (m+2) input tile d gives an m x m output tile Y = A^T [U (.) V] A with
V = B^T d B (input transform) and U = G g G^T (weight transform, done once here, at export, in float64: the
artifact holds U, never g). Summed over input channels, the elementwise product becomes one GEMM per tap:
T = (m+2)^2 batched GEMMs M[t] = U[t] (O x C) @ V[t] (C x tiles), 16 for F(2x2, 3x3), 36 for F(4x4, 3x3),
against 9 * m^2 products per output tile of the direct convolution (2.25x and 4x fewer multiplications).

Graph shape (what jax2onnx emits; every op one that ONNX Runtime and OpenVINO run with their own kernels):
- input transform: every channel of every image is one image of a Conv with T fixed (m+2) x (m+2) kernels
  (B^T[k] x B^T[l]), stride m; its padding is the 1-pixel border plus the tile grid's overhang: an H x W map has
  n = ceil(H / m) tiles per side, so odd sizes (the U-Net reaches 9x9 at S=144) are exact, the extra input rows
  being zeros and the extra output rows cropped;
- one Transpose puts the taps first; the GEMM is one batched MatMul U (T, O, C) @ V (T, C, B * tiles), the
  batch joined to the tiles so that U is read once per batch (for the 9x9 layers U is 36-144 MB);
- one Transpose back, then the output transform and the tile interleave in one ConvTranspose (T inputs, one
  output, kernel = stride = m, kernels A^T[r, k] A^T[s, l]), the crop and the bias.
The measured cost (benchmarks/README.md): the transforms are memory-bound passes over tensors 4x (F(2x2)) or
2.25x (F(4x4)) the feature map; they pay only where the GEMM is large against them (many channels).

Transform matrices: Lavin & Gray, "Fast algorithms for convolutional neural networks" (2016), interpolation
points 0, +-1, (F(4x4,3x3): +-2), infinity. Y = A^T[(G g G^T) (.) (B^T d B)]A is the cross-correlation (what
Conv2d computes), checked against the direct convolution in tests/test_winograd.py.
"""
from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from export.model import Conv, TractSeg
from runtime.models.manifest import CONV_ALGORITHMS

ALGORITHMS = CONV_ALGORITHMS  # direct, winograd2, winograd4
OUTPUT_TILE = {"winograd2": 2, "winograd4": 4}

_TRANSFORMS: dict[int, tuple[list[list[float]], list[list[float]], list[list[float]]]] = {
    2: ([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]]),
    4: ([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
         [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
         [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]),
}


def transforms(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B^T, G, A^T) of F(m x m, 3x3) in float64: shapes (m+2, m+2), (m+2, 3), (m, m+2)."""
    bt, g, at = _TRANSFORMS[m]
    return np.array(bt, np.float64), np.array(g, np.float64), np.array(at, np.float64)


def transform_weight(weight: np.ndarray, m: int) -> np.ndarray:
    """U = G g G^T of an OIHW 3x3 weight, in float64 then rounded once to float32, laid out (col tap l, row tap k)
    flattened: (T, O, C) with U[l*(m+2) + k] = (G g G^T)[k, l]."""
    _, g, _ = transforms(m)
    u = np.einsum("ka,oiab,lb->lkoi", g, np.asarray(weight, np.float64), g)
    t = m + 2
    return u.reshape(t * t, *weight.shape[:2]).astype(np.float32)


def input_kernels(m: int) -> np.ndarray:
    """(T, 1, t, t) float32: kernel l*t + k is the outer product B^T[k] x B^T[l] (exact: small integers)."""
    bt, _, _ = transforms(m)
    t = m + 2
    return np.einsum("ka,lb->lkab", bt, bt).reshape(t * t, 1, t, t).astype(np.float32)


def output_kernels(m: int) -> np.ndarray:
    """(T, 1, m, m) float32 in ConvTranspose's (in, out, kH, kW) layout: entry [l*t + k, 0, r, s] is
    A^T[r, k] * A^T[s, l] (exact: small integers)."""
    _, _, at = transforms(m)
    t = m + 2
    return np.einsum("rk,sl->lkrs", at, at).reshape(t * t, 1, m, m).astype(np.float32)


class WinogradConv(eqx.Module):
    """A 3x3, stride-1, padding-1 convolution by Winograd F(m x m, 3x3): u (T, O, C) = G g G^T, bias (O,)."""

    u: jax.Array
    bias: jax.Array
    m: int = eqx.field(static=True)

    @classmethod
    def from_conv(cls, conv: Conv, m: int) -> WinogradConv:
        if conv.weight.shape[-2:] != (3, 3):
            raise ValueError(f"Winograd F({m}x{m},3x3) needs a 3x3 kernel, not {conv.weight.shape}")
        return cls(jnp.asarray(transform_weight(np.asarray(conv.weight), m)), conv.bias, m)

    def __call__(self, x: jax.Array) -> jax.Array:
        m, t = self.m, self.m + 2
        b, c, h, w = x.shape
        o = self.u.shape[1]
        nh, nw = -(-h // m), -(-w // m)
        # input transform: every channel of every image through one Conv with T fixed t x t kernels, stride m;
        # the padding covers the 1-pixel border and the tile grid's overhang (zeros, cropped below)
        tiles = jax.lax.conv_general_dilated(
            x.reshape(b * c, 1, h, w), jnp.asarray(input_kernels(m)), window_strides=(m, m),
            padding=((1, 1 + nh * m - h), (1, 1 + nw * m - w)), dimension_numbers=("NCHW", "OIHW", "NCHW"),
            precision=jax.lax.Precision.HIGHEST)  # (B*C, T, nh, nw)
        v = tiles.reshape(b, c, t * t, nh * nw).transpose(2, 1, 0, 3).reshape(t * t, c, b * nh * nw)
        products = jnp.matmul(self.u, v, precision=jax.lax.Precision.HIGHEST)  # (T, O, B * tiles)
        products = products.reshape(t * t, o, b, nh, nw).transpose(2, 1, 0, 3, 4).reshape(b * o, t * t, nh, nw)
        # output transform and tile interleave: one transposed convolution, kernel = stride = m
        y = jax.lax.conv_transpose(products, jnp.asarray(output_kernels(m)), strides=(m, m), padding="VALID",
                                   dimension_numbers=("NCHW", "OIHW", "NCHW"), transpose_kernel=True,
                                   precision=jax.lax.Precision.HIGHEST).reshape(b, o, nh * m, nw * m)
        if (nh * m, nw * m) != (h, w):
            y = y[:, :, :h, :w]
        return y + self.bias[None, :, None, None]


def conv3_layers(network: TractSeg) -> list[str]:
    """The names of the network's 3x3 convolutions, in upstream's order."""
    return [name for name, layer in network.layers.items()
            if isinstance(layer, Conv) and layer.weight.shape[-2:] == (3, 3)]


def with_algorithms(network: TractSeg, choice: dict[str, str]) -> TractSeg:
    """The network with each named 3x3 layer computed by its algorithm (direct, winograd2, winograd4)."""
    bad = {name: algo for name, algo in choice.items() if algo not in ALGORITHMS or name not in network.layers}
    if bad:
        raise ValueError(f"unknown layer or algorithm in {bad} (algorithms: {', '.join(ALGORITHMS)})")
    layers = dict(network.layers)
    for name, algorithm in choice.items():
        if algorithm != "direct":
            layers[name] = WinogradConv.from_conv(network.layers[name], OUTPUT_TILE[algorithm])
    return TractSeg(layers=layers, n_classes=network.n_classes, upsample=network.upsample, linear=network.linear)
