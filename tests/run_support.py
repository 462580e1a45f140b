"""Shared by the runtime CLI tests: real bundles built with `python -m export` (cached), real NIfTI inputs, and the
CLI's contract for a refused run (one error line, exit status 1, nothing written)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from benchmarks.bundle import EXPORT_INPUTS

REPO = Path(__file__).resolve().parent.parent
# A bundle is rebuilt whenever anything that shapes it changes (EXPORT_INPUTS).
# Fast tests: S=16 (4 poolings down to 1x1) and a batch of 3, so a short last batch is padded; the network then
# costs ~1 s per run and opening the backend (sha256 + load of the 148 MB weights) dominates.
SMALL_SIZE, SMALL_BATCH = 16, 3
LAS = np.array([[-2.5, 0, 0, 90.0], [0, 2.5, 0, -126.0], [0, 0, 2.5, -72.0], [0, 0, 0, 1]])
N_BUNDLES = 72  # tract_segmentation files of one run


def bundle_cache(config: pytest.Config) -> Path:
    """Bundles persist across sessions in pytest's cache (.pytest_cache), keyed by the export sources."""
    override = os.environ.get("TRACTSEG_AOT_TEST_BUNDLES")
    return Path(override) if override else Path(config.cache.mkdir("tractseg-aot-bundles"))


def build_bundle(cache: Path, task: str = "tract_segmentation", formats: tuple[str, ...] = ("onnx",),
                 size: int = 32, seed: int = 0, weights: Path | None = None, batch_size: int = 4,
                 platforms: tuple[str, ...] = ("cpu",), tract_definition: str = "TractQuerier+",
                 precisions: tuple[str, ...] = (), min_dice: float | None = None) -> Path:
    """A bundle from the real export CLI (random demo weights, or an upstream checkpoint), cached.

    The folder name says what the bundle is; its last part is a hash of the export sources (and the weights
    file), so editing export/ rebuilds it, and the stale build with the same name is removed.
    """
    source = ["--weights", str(weights)] if weights else ["--random-weights", str(seed)]
    args = ["--task", task, *source, "--slice-size", str(size), "--batch-size", str(batch_size),
            "--formats", ",".join(formats), "--platforms", ",".join(platforms)]
    if tract_definition != "TractQuerier+":
        args += ["--tract_definition", tract_definition]
    if precisions:
        args += ["--precisions", ",".join(precisions)]
    if min_dice is not None:
        args += ["--min-dice", str(min_dice)]
    key = hashlib.sha256(" ".join(args).encode())
    for path in EXPORT_INPUTS + ([weights] if weights else []):
        key.update(path.read_bytes())
    origin = f"w{hashlib.sha256(weights.read_bytes()).hexdigest()[:8]}" if weights else f"seed{seed}"
    model = task if tract_definition == "TractQuerier+" else f"{task}_{tract_definition}"
    name = f"{model}-S{size}-B{batch_size}-{'-'.join(formats + precisions)}-{'-'.join(platforms)}-{origin}"
    return cached_export(cache, name, key.hexdigest()[:12], args)


def cached_export(cache: Path, name: str, key: str, args: list[str]) -> Path:
    """``cache/<name>-<key>``: built with ``python -m export ARGS`` unless present; older builds of the same name
    (another key) are removed."""
    out = cache / f"{name}-{key}"
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


# ---------------------------------------------------------------- the CLI's contract for a refused run

PREFIX = "tractseg-aot: error: "
STAGING_PREFIX = ".tractseg-aot-staging-"
LOCK_NAME = ".tractseg-aot.lock"
# stderr lines a refused run may print besides its one error line
ALLOWED_WARNINGS = ("demo weights",)


def check_one_error(err: str, expect: str | Sequence[str] = (), allowed: Sequence[str] = ALLOWED_WARNINGS,
                    prefix: str = PREFIX) -> str:
    """``err`` (a run's stderr) holds exactly one "tractseg-aot: error: " line (``prefix``: another command's),
    containing ``expect`` (one of them, when a sequence), no traceback and no other line but the ``allowed``
    warnings; returns the error line."""
    lines = err.splitlines()
    errors = [line for line in lines if line.startswith(prefix)]
    others = [line for line in lines if not line.startswith(prefix) and not any(a in line for a in allowed)]
    assert len(errors) == 1 and others == [], f"expected one error line, got:\n{err}"
    assert "Traceback" not in err, err
    options = [expect] if isinstance(expect, str) else list(expect)
    assert not options or any(e in errors[0] for e in options), f"none of {options} in: {errors[0]}"
    return errors[0]


def refused(capsys, root: Path, *args, expect: str | Sequence[str], code: int = 1) -> str:
    """Run the CLI in this process (runtime.run.main); it must fail with exit status ``code``, one error line
    containing ``expect`` (2: argparse's usage error) and write nothing under ``root``. Returns the error line."""
    from runtime.run import main

    before = files_under(root)
    if code == 2:
        with pytest.raises(SystemExit) as exit_info:
            main([str(a) for a in args])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and (isinstance(expect, str) and expect in err), err
        assert files_under(root) == before, "a refused run wrote files"
        return err
    assert main([str(a) for a in args]) == code
    _, err = capsys.readouterr()
    line = check_one_error(err, expect)
    assert files_under(root) == before, "a refused run wrote files"
    assert not (root / "out").exists()
    return line


def final_files(outdir: Path) -> list[Path]:
    """Files under ``outdir`` under a final name: not in a hidden staging folder, not the lock file."""
    return [p for p in files_under(outdir)
            if not any(part.startswith(STAGING_PREFIX) for part in p.relative_to(outdir).parts)
            and p.name != LOCK_NAME]


def staging_folders(outdir: Path) -> list[Path]:
    return sorted(outdir.glob(f"{STAGING_PREFIX}*")) if outdir.is_dir() else []


def resign(bundle: Path, *files: str) -> None:
    """Rewrite the manifest's size and sha256 of `files` after a test changed them (a consistent but wrong
    bundle, which only the self-check can catch)."""
    from runtime.io.checksum import sha256_of

    manifest = json.loads((bundle / "manifest.json").read_text())
    for rel in files:
        manifest["files"][rel] = {"size": (bundle / rel).stat().st_size, "sha256": sha256_of(bundle / rel)}
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def copy_bundle(source: str | os.PathLike[str], target: Path, with_artifact: bool = True,
                link_artifact: bool = False) -> Path:
    """A copy of a bundle's manifest (and model.onnx: copied, or a symbolic link to save 150 MB of copying; the
    dropout model of a tract bundle, untouched by these tests, always as a link)."""
    target.mkdir(parents=True)
    dropout = Path(source).resolve() / "model_dropout.onnx"
    if dropout.is_file():
        os.symlink(dropout, target / dropout.name)
    shutil.copy(os.path.join(source, "manifest.json"), target)
    if os.path.exists(os.path.join(source, "selfcheck.npz")):
        shutil.copy(os.path.join(source, "selfcheck.npz"), target)
    if link_artifact:
        os.symlink(Path(source).resolve() / "model.onnx", target / "model.onnx")
    elif with_artifact:
        shutil.copy(os.path.join(source, "model.onnx"), target)
    return target


def edit_manifest(bundle: Path, change: Callable[[Any], Any]) -> Path:
    """Rewrite ``bundle``/manifest.json with ``change(document)`` (its return value is written)."""
    path = bundle / "manifest.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    return path


def replace_artifact(bundle: Path, content: bytes, name: str = "model.onnx") -> Path:
    """Put ``content`` in the bundle's artifact file and record its size and sha256 in the manifest: the checksum
    matches, whatever the backend thinks of the file."""
    target = bundle / name
    target.unlink(missing_ok=True)
    target.write_bytes(content)

    def change(manifest):
        manifest["files"][name] = {"size": len(content), "sha256": hashlib.sha256(content).hexdigest()}
        return manifest

    edit_manifest(bundle, change)
    return target


def raw_nifti(path: Path, header: nib.Nifti1Header, payload: bytes = b"") -> Path:
    """A NIfTI file written byte by byte from ``header`` (as it is: nibabel's checks and fixes on save are
    skipped) and ``payload`` after the data offset; gzip-compressed for a .gz name."""
    import gzip

    offset = int(header.get_data_offset()) or header.single_vox_offset
    header.set_data_offset(offset)
    block = header.binaryblock
    raw = block + b"\0" * (offset - len(block)) + payload
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw, mtime=0) if path.name.endswith(".gz") else raw)
    return path


def cli_command(*args) -> list[str]:
    return [sys.executable, "-m", "runtime.run", *(str(a) for a in args)]


def start_cli(*args, shell_prefix: str | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m runtime.run ARGS`` in a subprocess (text pipes), optionally after ``shell_prefix`` in bash
    (e.g. ``ulimit -v 500000``)."""
    command = cli_command(*args)
    if shell_prefix:
        import shlex

        command = ["bash", "-c", f"{shell_prefix}; exec {shlex.join(command)}"]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def run_args(path, bundle, tmp_path, *extra):
    """The CLI's arguments for a quiet run of ``path`` with ``bundle``, outputs in ``tmp_path``/out."""
    return (path, "-o", tmp_path / "out", "--artifacts", bundle, "--quiet", *extra)


def wait(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err
