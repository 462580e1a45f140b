"""Multiply-accumulates of one forward pass, counted from the layer table (19.36 GMAC per 144x144 slice)."""
from __future__ import annotations

from export.model import layer_table

# Output resolution of each layer as a divisor of the slice size S (conv3/conv1: output = input resolution;
# deconv k2 s2: counted at its output resolution, where each output pixel takes cin MACs per output channel).
_SCALE = {"contr_1": 1, "contr_2": 2, "contr_3": 4, "contr_4": 8, "encode": 16, "deconv_1": 8, "expand_1": 8,
          "deconv_2": 4, "expand_2": 4, "output_2": 4, "deconv_3": 2, "expand_3": 2, "output_3": 2,
          "deconv_4": 1, "expand_4": 1, "conv_5": 1}


def _divisor(name: str) -> int:
    for prefix, divisor in _SCALE.items():
        if name.startswith(prefix):
            return divisor
    raise KeyError(name)


def macs_per_slice(n_classes: int, size: int = 144) -> int:
    """MACs of the network (convolutions and transposed convolutions only) on one (9, S, S) slice."""
    total = 0
    for name, kind, cin, cout in layer_table(n_classes):
        pixels = (size // _divisor(name)) ** 2
        taps = {"conv3": 9, "conv1": 1, "deconv": 1}[kind]
        total += pixels * cin * cout * taps
    return total


def gflops(n_classes: int, size: int, slices: int, seconds: float) -> float:
    """Achieved GFLOP/s (2 FLOP per MAC) for `slices` slices in `seconds`."""
    return 2.0 * macs_per_slice(n_classes, size) * slices / seconds / 1e9
