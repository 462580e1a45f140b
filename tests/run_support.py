"""Shared by the runtime CLI tests: real bundles built with `python -m export` (cached), real NIfTI inputs."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
# A bundle is rebuilt whenever anything that shapes it changes.
EXPORT_INPUTS = sorted((REPO / "export").glob("*.py")) + [REPO / "runtime" / n for n in
                                                          ("manifest.py", "bundles.py", "checksum.py")]
# Fast tests: S=16 (4 poolings down to 1x1) and a batch of 3, so a short last batch is padded; the network then
# costs ~1 s per run and opening the backend (sha256 + load of the 148 MB weights) dominates.
SMALL_SIZE, SMALL_BATCH = 16, 3
LAS = np.array([[-2.5, 0, 0, 90.0], [0, 2.5, 0, -126.0], [0, 0, 2.5, -72.0], [0, 0, 0, 1]])


def bundle_cache(config: pytest.Config) -> Path:
    """Bundles persist across sessions in pytest's cache (.pytest_cache), keyed by the export sources."""
    override = os.environ.get("TRACTSEG_AOT_TEST_BUNDLES")
    return Path(override) if override else Path(config.cache.mkdir("tractseg-aot-bundles"))


def build_bundle(cache: Path, task: str = "tract_segmentation", formats: tuple[str, ...] = ("onnx",),
                 size: int = 32, seed: int = 0, weights: Path | None = None, batch_size: int = 4,
                 platforms: tuple[str, ...] = ("cpu",), tract_definition: str = "TractQuerier+") -> Path:
    """A bundle from the real export CLI (random demo weights, or an upstream checkpoint), cached.

    The folder name says what the bundle is; its last part is a hash of the export sources (and the weights
    file), so editing export/ rebuilds it, and the stale build with the same name is removed.
    """
    source = ["--weights", str(weights)] if weights else ["--random-weights", str(seed)]
    args = ["--task", task, *source, "--slice-size", str(size), "--batch-size", str(batch_size),
            "--formats", ",".join(formats), "--platforms", ",".join(platforms)]
    if tract_definition != "TractQuerier+":
        args += ["--tract_definition", tract_definition]
    key = hashlib.sha256(" ".join(args).encode())
    for path in EXPORT_INPUTS + ([weights] if weights else []):
        key.update(path.read_bytes())
    origin = f"w{hashlib.sha256(weights.read_bytes()).hexdigest()[:8]}" if weights else f"seed{seed}"
    model = task if tract_definition == "TractQuerier+" else f"{task}_{tract_definition}"
    name = f"{model}-S{size}-B{batch_size}-{'-'.join(formats)}-{'-'.join(platforms)}-{origin}"
    out = cache / f"{name}-{key.hexdigest()[:12]}"
    if (out / "manifest.json").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    done = subprocess.run([sys.executable, "-m", "export", *args, "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"python -m export {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    for stale in cache.glob(f"{name}-*"):
        if stale != out and len(stale.name) == len(out.name):
            shutil.rmtree(stale, ignore_errors=True)
    return out


def small_bundle(config: pytest.Config, task: str = "tract_segmentation", **options) -> Path:
    """The fast tests' bundle for a task: S=16, batch 3, ONNX, demo weights (seed 0)."""
    return build_bundle(bundle_cache(config), task, size=SMALL_SIZE, batch_size=SMALL_BATCH, **options)


def synthetic_peaks(shape: tuple[int, int, int] = (22, 26, 19), seed: int = 0) -> np.ndarray:
    """Peak-like data: smooth direction fields inside an ellipsoid, zero outside (float32, (X, Y, Z, 9))."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float64)
    centre = (np.array(shape, dtype=np.float64) - 1)[:, None, None, None] / 2
    inside = np.sqrt((((grid - centre) / (centre * 0.9)) ** 2).sum(0)) < 1
    field = ndimage.gaussian_filter(rng.normal(0, 1, (*shape, 9)), sigma=(2, 2, 2, 0))
    field /= field.std()
    return (field * inside[..., None]).astype(np.float32)


def save_peaks(path: Path, data: np.ndarray, affine: np.ndarray = LAS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def flipped_input(data: np.ndarray, affine: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The same image stored with the given voxel axes reversed (world positions unchanged)."""
    new_affine = affine.copy()
    for axis in axes:
        new_affine[:3, 3] += affine[:3, axis] * (data.shape[axis] - 1)
        new_affine[:3, axis] *= -1
    return np.flip(data, axis=axes).copy(), new_affine


def read(path: Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    image = nib.load(path)
    return np.asarray(image.dataobj), image


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []
