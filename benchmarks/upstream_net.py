"""Upstream TractSeg's network (tractseg==2.10 + torch) with the benchmark's weights: build it, save it as an
upstream checkpoint, run its per-slice path. Imported only when torch and tractseg are installed; the parity
tests use the same helpers (tests/upstream.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

SQRT6 = 6.0 ** 0.5


def upstream_network(n_classes: int, seed: int, upsample: str = "bilinear"):
    """Upstream's UNet_Pytorch_DeepSup with torch's default init under `seed`, conv weights x sqrt(6)
    (``upsample``: "nearest" for TOM's peak-regression parts).

    Default init makes a 23-layer net nearly constant (any two implementations would agree); x sqrt(6) is He
    init, under which the probabilities really vary (see ../shared/docs/upstream-tractseg.md).
    """
    import torch
    from tractseg.models.unet_pytorch_deepsup import UNet_Pytorch_DeepSup

    torch.manual_seed(seed)
    net = UNet_Pytorch_DeepSup(n_input_channels=9, n_classes=n_classes, n_filt=64, batchnorm=False,
                               dropout=False, upsample=upsample)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                m.weight.mul_(SQRT6)
    return net.eval()


def save_upstream_checkpoint(net, path: Path, legacy: bool = False) -> Path:
    """torch.save({"unet": state_dict}) as upstream writes its .npz files (zip or legacy torch format)."""
    import torch

    torch.save({"unet": net.state_dict()}, path, _use_new_zipfile_serialization=not legacy)
    return path


def upstream_probabilities(net, raw_slices: np.ndarray) -> np.ndarray:
    """Upstream's per-slice path: float64 z-score (eps 1e-7, ddof 0) -> float32 -> net -> sigmoid."""
    import torch

    x = raw_slices.astype(np.float64)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    std = x.std(axis=(1, 2, 3), keepdims=True) + 1e-7
    with torch.no_grad():
        return torch.sigmoid(net(torch.from_numpy(((x - mean) / std).astype(np.float32)))).numpy()
