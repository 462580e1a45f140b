"""``--uncertainty``: upstream's Monte Carlo dropout, with the dropout masks drawn here.

Upstream (TractSeg 2.10, ``trainer.predict_img`` with ``Config.DROPOUT_SAMPLING``): the tract_segmentation network
is built with ``nn.Dropout(p=0.4)`` on ``pool_4`` (its configs set ``USE_DROPOUT = True``) and put in train mode;
each batch of slices runs ``NR_SAMPLING = 30`` times and the per-voxel ``np.std`` over the 30 probability maps
is that orientation's map. The three orientations are then averaged like probabilities (``mean_fusion``).

The bundle's dropout model (``manifest.find(..., dropout=True)``: the network with pool_4 multiplied by a second
input) takes the mask; :class:`DropoutSampler` draws each one with numpy (Bernoulli(1 - p) / (1 - p), torch's
train-mode dropout) from ``--seed``, so a run is reproducible and the same masks can be fed to upstream's torch
model (tests/test_uncertainty.py). It stands in for the backend in :func:`runtime.network.predict.fused_probabilities`:
every batch the network would run once runs ``samples`` times, and the standard deviation comes back in its place.
The standard deviation is accumulated in float64 around the first sample (no array of all 30 samples: 716 MB at
S=144, batch 4, 72 bundles); it agrees with ``np.std`` of the stacked float32 samples to ~1e-7.

All-zero slices keep the shortcut of :mod:`runtime.network.predict`: one batch of zeros is sampled once and its
map copied to every empty slice (such slices lie in the cube's padding, which the way back never reads).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

DROPOUT_P = 0.4  # UNet_Pytorch_DeepSup: self.dropout = nn.Dropout(p=0.4)
SAMPLES = 30  # trainer.predict_img: NR_SAMPLING = 30

MaskedRun = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (slices, mask) -> probabilities


def bottleneck_shape(batch_size: int, slice_size: int) -> tuple[int, int, int, int]:
    """pool_4's shape, the dropout mask's: (B, 512, S/16, S/16) (n_filt 64: 8 x 64 channels after four poolings)."""
    return (batch_size, 512, slice_size // 16, slice_size // 16)


def dropout_masks(rng: np.random.Generator, shape: tuple[int, ...], p: float = DROPOUT_P) -> np.ndarray:
    """One train-mode dropout mask, float32: 0 with probability ``p``, else 1 / (1 - p)."""
    keep = rng.random(shape, dtype=np.float32) >= np.float32(p)
    return keep.astype(np.float32) * (np.float32(1) / np.float32(1 - p))


def check_masks(shape: tuple[int, ...], seed: int = 0) -> list[np.ndarray]:
    """The masks a dropout model is verified with (the export's and runtime.weights' checks): ones (dropout off:
    the plain network), then two drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    return [np.ones(shape, dtype=np.float32), dropout_masks(rng, shape), dropout_masks(rng, shape)]


class DropoutSampler:
    """A backend-shaped callable: ``sampler(batch)`` is the per-pixel standard deviation over ``samples`` runs of
    the dropout model ``run`` (an opened backend: its name, device, version and detail are the sampler's), each
    with a fresh mask. ``record``: a list that receives every mask in the order used."""

    def __init__(self, run: MaskedRun, mask_shape: tuple[int, ...], samples: int = SAMPLES, seed: int = 0,
                 record: list[np.ndarray] | None = None):
        self.run, self.mask_shape, self.samples = run, tuple(mask_shape), samples
        self.rng = np.random.default_rng(seed)
        self.name, self.device = getattr(run, "name", ""), getattr(run, "device", "cpu")
        self.version, self.detail = getattr(run, "version", ""), getattr(run, "detail", "")
        self.record = record
        self.calls = 0  # network runs made (samples x batches)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        first: np.ndarray | None = None
        total = squares = None
        for _ in range(self.samples):
            mask = dropout_masks(self.rng, self.mask_shape)
            if self.record is not None:
                self.record.append(mask)
            out = self.run(batch, mask)
            self.calls += 1
            if first is None:
                first = out.copy()
                total = np.zeros(out.shape, dtype=np.float64)
                squares = np.zeros(out.shape, dtype=np.float64)
                continue
            shifted = out.astype(np.float64)
            shifted -= first
            total += shifted
            shifted *= shifted
            squares += shifted
        assert first is not None and total is not None and squares is not None
        mean = total / self.samples
        variance = squares / self.samples - mean * mean
        np.maximum(variance, 0.0, out=variance)
        return np.sqrt(variance).astype(np.float32)


class OnesMask:
    """The dropout model with every mask 1 (dropout off): the plain network, for the bundle's self-check."""

    def __init__(self, run: MaskedRun, mask_shape: tuple[int, ...]):
        self.run, self.ones = run, np.ones(mask_shape, dtype=np.float32)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.run(batch, self.ones)
