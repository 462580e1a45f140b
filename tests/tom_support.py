"""Shared by tests/test_tom.py and tests/test_dm.py: upstream-format checkpoints of the TOM parts and the
dm_regression model (random He-scaled weights, upstream's own network class), bundles exported from them with the
real export CLI (cached like tests/run_support.build_bundle), bundle masks, and upstream's own run_tractseg at a
small cube size (its INPUT_DIM and weights folders patched: the code path is upstream's)."""
from __future__ import annotations

import hashlib
from importlib.metadata import version
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from benchmarks.bundle import EXPORT_INPUTS
from runtime.models.bundles import model_for
from tests.run_support import REPO, bundle_cache, cached_export, read

TOM_SEEDS = (101, 102, 103, 104)
DM_SEED = 105
# A flipped 2 mm grid: x positive (upstream flips x) and y negative (flips y)
FLIPPED = np.array([[2.0, 0, 0, -40.0], [0, -2.0, 0, 50.0], [0, 0, 2.0, -30.0], [0, 0, 0, 1]])


def weights_dir(config: pytest.Config) -> Path:
    """Upstream checkpoints of the four TOM parts and dm_regression under upstream's names (made once, kept with
    the cached bundles: torch.save is not byte-reproducible)."""
    pytest.importorskip("torch")
    pytest.importorskip("tractseg")
    from tests.upstream import save_upstream_checkpoint, upstream_network

    key = hashlib.sha256((REPO / "benchmarks" / "upstream_net.py").read_bytes())
    key.update(f"{version('torch')} {version('TractSeg')} {TOM_SEEDS} {DM_SEED}".encode())
    folder = bundle_cache(config) / f"upstream-tom-dm-weights-{key.hexdigest()[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    wanted = [(part, seed, "nearest") for part, seed in zip(model_for("TOM").parts, TOM_SEEDS)]
    wanted.append((model_for("dm_regression"), DM_SEED, "bilinear"))
    for model, seed, upsample in wanted:
        if not (folder / model.local_name).is_file():
            partial = folder / f"{model.local_name}.partial"
            save_upstream_checkpoint(upstream_network(model.n_classes, seed, upsample), partial)
            partial.rename(folder / model.local_name)
    return folder


def export_bundle(config: pytest.Config, task: str, source: list[str], size: int, batch: int = 3) -> Path:
    """`python -m export --task TASK SOURCE --slice-size SIZE --formats onnx --platforms cpu`, cached by the
    export sources and the weights' bytes."""
    args = ["--task", task, *source, "--slice-size", str(size), "--batch-size", str(batch), "--formats", "onnx",
            "--platforms", "cpu"]
    key = hashlib.sha256(" ".join(args).encode())
    for path in EXPORT_INPUTS:
        key.update(path.read_bytes())
    given = Path(source[1])
    for path in (sorted(given.glob("*.npz")) if given.is_dir() else [given]):
        key.update(path.read_bytes())
    return cached_export(bundle_cache(config), f"{task}-S{size}-B{batch}-onnx", key.hexdigest()[:12], args)


def write_masks(folder: Path, bundles, shape: tuple[int, int, int], affine: np.ndarray, seed: int = 0,
                empty: tuple[str, ...] = ()) -> Path:
    """A blob mask per bundle (smoothed noise over a threshold), int32 like upstream's; ``empty`` all zero."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in bundles:
        noise = ndimage.gaussian_filter(rng.normal(size=shape), sigma=1.5)
        mask = (noise > np.quantile(noise, 0.7)).astype(np.int32)
        if name in empty:
            mask[:] = 0
        nib.save(nib.Nifti1Image(mask, affine), folder / f"{name}.nii.gz")
    return folder


def upstream_run(monkeypatch: pytest.MonkeyPatch, peaks: Path, weights: Path, size: int, output_type: str,
                 masks: Path | None = None, parts: tuple[str, ...] = ("Part1", "Part2", "Part3", "Part4")
                 ) -> np.ndarray:
    """bin/TractSeg's steps for TOM / dm_regression around upstream's python_api.run_tractseg at cube ``size``:
    load, flip to MNI, run (TOM: ``parts``, single orientation), flip back (dm: values < THRESHOLD -> 0).
    Returns (X, Y, Z, C) as upstream writes it (TOM: 3 channels per bundle, parts concatenated)."""
    from tractseg import python_api
    from tractseg.data import dataset_specific_utils
    from tractseg.libs import img_utils
    from tractseg.libs.system_config import SystemConfig

    monkeypatch.setattr(SystemConfig, "WEIGHTS_DIR", str(weights))
    monkeypatch.setattr(SystemConfig, "TRACT_SEG_HOME", str(weights))  # TOM's weights come from here upstream
    monkeypatch.setattr(dataset_specific_utils, "get_correct_input_dim", lambda config: (size, size))
    image = nib.load(peaks)
    data, flip_axes = img_utils.flip_axis_to_match_MNI_space(image.get_fdata(), image.affine)
    parts = parts if output_type == "TOM" else ("All",)
    outputs = []
    for part in parts:
        seg = python_api.run_tractseg(data, output_type, single_orientation=output_type == "TOM",
                                      peak_regression_part=part, nr_cpus=1, tract_segmentations_path=masks,
                                      TOM_dilation=1)
        for axis in flip_axes:
            seg = img_utils.flip_axis(seg, axis)
        outputs.append(seg)
    seg = np.concatenate(outputs, axis=-1)
    if output_type == "dm_regression":
        from tractseg.experiments.pretrained_models.DmReg import Config

        seg[seg < Config.THRESHOLD] = 0  # as bin/TractSeg
    return seg


def read_maps(out: Path) -> np.ndarray:
    """The 72 density maps runtime.run wrote under ``out``, stacked (X, Y, Z, 72)."""
    bundles = model_for("dm_regression").bundles
    assert sorted(p.name for p in (out / "dm_regression").iterdir()) == sorted(f"{b}.nii.gz" for b in bundles)
    return np.stack([read(out / "dm_regression" / f"{b}.nii.gz")[0] for b in bundles], axis=-1)


def threshold_ties(ours: np.ndarray, theirs: np.ndarray, threshold: float) -> np.ndarray:
    """Voxels zeroed by the threshold on one side only; each must be a tie (within 1e-4 of ``threshold``)."""
    one_side = (ours == 0) != (theirs == 0)
    assert np.all(np.abs(np.where(one_side, ours + theirs, threshold) - threshold) <= 1e-4), "a non-tie zeroed"
    return one_side
