"""The live model: upstream TractSeg's UNet_Pytorch_DeepSup (n_filt 64) as an Equinox module.

Parameters are kept in PyTorch's layouts (Conv2d OIHW, ConvTranspose2d IOHW) under upstream's state_dict names,
so converting weights is a rename-free copy. Every op is chosen to trace cleanly through jax.export, jax2tf and
jax2onnx on a fixed-shape 4D batch: NCHW convolutions, max-pool as reshape + max, the k2/s2 transposed
convolution as one contraction, and the x2 bilinear upsampling (align_corners=False) written out by hand.
"""
from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

N_FILT = 64
N_INPUT_CHANNELS = 9
LEAKY_SLOPE = 0.01  # torch.nn.LeakyReLU default
NORM_EPS = 1e-7  # upstream's per-slice normalisation: (x - mean) / (std + 1e-7)
DROPOUT_P = 0.4  # upstream's nn.Dropout(p=0.4) on pool_4 (tract_segmentation's configs: USE_DROPOUT = True)


class Conv(eqx.Module):
    """nn.Conv2d with 'same' padding (3x3, padding 1, or 1x1): weight (O, I, k, k), bias (O,)."""

    weight: jax.Array
    bias: jax.Array

    def __call__(self, x: jax.Array) -> jax.Array:
        pad = self.weight.shape[-1] // 2
        y = jax.lax.conv_general_dilated(
            x, self.weight, window_strides=(1, 1), padding=((pad, pad), (pad, pad)),
            dimension_numbers=("NCHW", "OIHW", "NCHW"), precision=jax.lax.Precision.HIGHEST)
        return y + self.bias[None, :, None, None]


class Deconv(eqx.Module):
    """nn.ConvTranspose2d(kernel 2, stride 2): weight (I, O, 2, 2), bias (O,).

    lax.conv_transpose with transpose_kernel=True takes torch's (I, O, kH, kW) weight under the label "OIHW"
    (it swaps the two and flips the kernel, which is torch's definition). It lowers to ONNX ConvTranspose,
    3x faster in ONNX Runtime than the equivalent einsum (measured).
    """

    weight: jax.Array
    bias: jax.Array

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jax.lax.conv_transpose(x, self.weight, strides=(2, 2), padding="VALID",
                                   dimension_numbers=("NCHW", "OIHW", "NCHW"), transpose_kernel=True,
                                   precision=jax.lax.Precision.HIGHEST)
        return y + self.bias[None, :, None, None]


def leaky_relu(x: jax.Array) -> jax.Array:
    """torch.nn.LeakyReLU(0.01); jax.nn.leaky_relu becomes one ONNX LeakyRelu, which ONNX Runtime fuses into
    the preceding Conv (a where/select costs 25% of the run time in ORT)."""
    return jax.nn.leaky_relu(x, negative_slope=LEAKY_SLOPE)


def max_pool_2x2(x: jax.Array) -> jax.Array:
    b, c, h, w = x.shape
    return x.reshape(b, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def _upsample_axis_x2(x: jax.Array, axis: int) -> jax.Array:
    """Linear x2 upsampling along one axis, align_corners=False, edges clamped (torch's rule).

    Output 2i samples source i - 1/4, output 2i+1 samples i + 1/4.
    """
    n = x.shape[axis]
    first = jax.lax.slice_in_dim(x, 0, 1, axis=axis)
    last = jax.lax.slice_in_dim(x, n - 1, n, axis=axis)
    prev = jnp.concatenate([first, jax.lax.slice_in_dim(x, 0, n - 1, axis=axis)], axis=axis)
    nxt = jnp.concatenate([jax.lax.slice_in_dim(x, 1, n, axis=axis), last], axis=axis)
    even = 0.75 * x + 0.25 * prev
    odd = 0.75 * x + 0.25 * nxt
    stacked = jnp.stack([even, odd], axis=axis + 1)
    shape = list(x.shape)
    shape[axis] = 2 * n
    return stacked.reshape(shape)


def upsample_bilinear_x2(x: jax.Array) -> jax.Array:
    """nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False) on an NCHW batch."""
    return _upsample_axis_x2(_upsample_axis_x2(x, 2), 3)


def upsample_nearest_x2(x: jax.Array) -> jax.Array:
    """nn.Upsample(scale_factor=2, mode="nearest") on an NCHW batch: output (i, j) is input (i // 2, j // 2),
    written as broadcast + reshape (both trace to plain ONNX Expand/Reshape)."""
    b, c, h, w = x.shape
    return jnp.broadcast_to(x[:, :, :, None, :, None], (b, c, h, 2, w, 2)).reshape(b, c, 2 * h, 2 * w)


UPSAMPLE = {"bilinear": upsample_bilinear_x2, "nearest": upsample_nearest_x2}


# (name, kind, in_channels, out_channels) in upstream's order; kind "conv3" is Conv2d 3x3 + LeakyReLU (state_dict
# key "<name>.0.*"), "deconv" is ConvTranspose2d 2/2 + LeakyReLU ("<name>.0.*"), "conv1" a bare 1x1 ("<name>.*").
def layer_table(n_classes: int, n_filt: int = N_FILT) -> list[tuple[str, str, int, int]]:
    f = n_filt
    return [
        ("contr_1_1", "conv3", N_INPUT_CHANNELS, f), ("contr_1_2", "conv3", f, f),
        ("contr_2_1", "conv3", f, 2 * f), ("contr_2_2", "conv3", 2 * f, 2 * f),
        ("contr_3_1", "conv3", 2 * f, 4 * f), ("contr_3_2", "conv3", 4 * f, 4 * f),
        ("contr_4_1", "conv3", 4 * f, 8 * f), ("contr_4_2", "conv3", 8 * f, 8 * f),
        ("encode_1", "conv3", 8 * f, 16 * f), ("encode_2", "conv3", 16 * f, 16 * f),
        ("deconv_1", "deconv", 16 * f, 16 * f),
        ("expand_1_1", "conv3", 8 * f + 16 * f, 8 * f), ("expand_1_2", "conv3", 8 * f, 8 * f),
        ("deconv_2", "deconv", 8 * f, 8 * f),
        ("expand_2_1", "conv3", 4 * f + 8 * f, 4 * f), ("expand_2_2", "conv3", 4 * f, 4 * f),
        ("deconv_3", "deconv", 4 * f, 4 * f),
        ("output_2", "conv1", 4 * f + 8 * f, n_classes),
        ("expand_3_1", "conv3", 2 * f + 4 * f, 2 * f), ("expand_3_2", "conv3", 2 * f, 2 * f),
        ("deconv_4", "deconv", 2 * f, 2 * f),
        ("output_3", "conv1", 2 * f + 4 * f, n_classes),
        ("expand_4_1", "conv3", f + 2 * f, f), ("expand_4_2", "conv3", f, f),
        ("conv_5", "conv1", f, n_classes),
    ]


def state_dict_key(name: str, kind: str, param: str) -> str:
    """Upstream's state_dict key of a layer parameter ('weight' or 'bias')."""
    return f"{name}.{param}" if kind == "conv1" else f"{name}.0.{param}"


def param_shape(kind: str, cin: int, cout: int, param: str) -> tuple[int, ...]:
    if param == "bias":
        return (cout,)
    return {"conv3": (cout, cin, 3, 3), "conv1": (cout, cin, 1, 1), "deconv": (cin, cout, 2, 2)}[kind]


class TractSeg(eqx.Module):
    """UNet_Pytorch_DeepSup: (B, 9, H, W) float32 -> logits (B, C, H, W), H and W divisible by 16.

    ``upsample``: the deep-supervision upsampling mode ("bilinear"; TOM's peak regression: "nearest");
    ``linear``: the exported function returns the raw outputs (TOM, dm_regression), else their sigmoid."""

    layers: dict[str, Conv | Deconv]
    n_classes: int = eqx.field(static=True)
    upsample: str = eqx.field(static=True, default="bilinear")
    linear: bool = eqx.field(static=True, default=False)

    def __call__(self, x: jax.Array, bottleneck_mask: jax.Array | None = None) -> jax.Array:
        """``bottleneck_mask`` (B, 8 n_filt, H/16, W/16): multiplies pool_4, as upstream's dropout does in train
        mode (``--uncertainty``: a Bernoulli(1 - p) draw divided by 1 - p, supplied by the runtime)."""
        L = self.layers

        def conv(name: str, h: jax.Array) -> jax.Array:
            return leaky_relu(L[name](h))

        c12 = conv("contr_1_2", conv("contr_1_1", x))
        c22 = conv("contr_2_2", conv("contr_2_1", max_pool_2x2(c12)))
        c32 = conv("contr_3_2", conv("contr_3_1", max_pool_2x2(c22)))
        c42 = conv("contr_4_2", conv("contr_4_1", max_pool_2x2(c32)))
        pool_4 = max_pool_2x2(c42)
        if bottleneck_mask is not None:
            pool_4 = pool_4 * bottleneck_mask
        enc = conv("encode_2", conv("encode_1", pool_4))
        concat1 = jnp.concatenate([conv("deconv_1", enc), c42], axis=1)
        e12 = conv("expand_1_2", conv("expand_1_1", concat1))
        concat2 = jnp.concatenate([conv("deconv_2", e12), c32], axis=1)
        e22 = conv("expand_2_2", conv("expand_2_1", concat2))
        up = UPSAMPLE[self.upsample]
        out2_up = up(L["output_2"](concat2))
        concat3 = jnp.concatenate([conv("deconv_3", e22), c22], axis=1)
        e32 = conv("expand_3_2", conv("expand_3_1", concat3))
        out3_up = up(out2_up + L["output_3"](concat3))
        concat4 = jnp.concatenate([conv("deconv_4", e32), c12], axis=1)
        e42 = conv("expand_4_2", conv("expand_4_1", concat4))
        return out3_up + L["conv_5"](e42)


def _staged_sum(v: jax.Array) -> jax.Array:
    """Sum over (C, H, W) as three short reductions (W, then H, then C), keepdims.

    One flat reduction over 9*144*144 values is accumulated sequentially by IREE's CPU codegen: the slice mean
    came out 7e-3 wrong (measured). Staged, each chain is at most 144 long and every backend agrees to ~1e-6.
    """
    return v.sum(axis=3, keepdims=True).sum(axis=2, keepdims=True).sum(axis=1, keepdims=True)


def normalise_slices(x: jax.Array) -> jax.Array:
    """Upstream's per-slice z-score over all 9*H*W values of each slice (ddof 0)."""
    n = x.shape[1] * x.shape[2] * x.shape[3]
    mean = _staged_sum(x) / n
    std = jnp.sqrt(_staged_sum(jnp.square(x - mean)) / n)
    return (x - mean) / (std + NORM_EPS)


def slice_probabilities(model: TractSeg, raw_slices: jax.Array) -> jax.Array:
    """The exported function: raw slices (B, 9, S, S) -> normalise -> network -> sigmoid -> (B, C, S, S)
    (no sigmoid for a ``linear`` model: TOM and dm_regression outputs are the network's raw values)."""
    out = model(normalise_slices(raw_slices))
    return out if model.linear else jax.nn.sigmoid(out)


def dropout_probabilities(model: TractSeg, raw_slices: jax.Array, bottleneck_mask: jax.Array) -> jax.Array:
    """The exported dropout function (``--uncertainty``): :func:`slice_probabilities` with pool_4 multiplied by
    ``bottleneck_mask``; a mask of ones gives :func:`slice_probabilities`' outputs."""
    out = model(normalise_slices(raw_slices), bottleneck_mask)
    return out if model.linear else jax.nn.sigmoid(out)


def parameter_count(model: TractSeg) -> int:
    return sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array)))
