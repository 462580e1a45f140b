"""Checks made before the network runs, so that a bad input, bundle or output location writes nothing.

* :func:`check_float_storage`: peak images hold float directions; unscaled integer storage is refused.
* :func:`resolve_bundle_dir` / :func:`open_manifest`: which bundle serves the request, and that it is the right one
  (task, tract definition, class count and bundle names); artifact checksums are verified when the backend
  opens it (:func:`runtime.backends.open_backend`).
* :func:`check_outputs`: the output locations are directories we can write to, and no output file exists
  unless ``--force``.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from runtime.bundles import Model
from runtime.manifest import MANIFEST_NAME, ArtifactError, Manifest, load_manifest
from runtime.nifti_io import InputError

ARTIFACTS_ENV = "TRACTSEG_AOT_ARTIFACTS"
REPO_ROOT = Path(__file__).resolve().parent.parent


class OutputError(RuntimeError):
    """An output location that cannot be used. One-line message."""


def check_float_storage(path: str | os.PathLike[str]) -> None:
    """Refuse unscaled integer peak data (header only; any other problem is left to load_peaks to report)."""
    try:
        image = nib.load(path)
        if not isinstance(image, (nib.Nifti1Pair, nib.Nifti2Pair)):
            return
        dtype = np.dtype(image.get_data_dtype())
        slope = float(getattr(image.dataobj, "slope", 1.0))
        inter = float(getattr(image.dataobj, "inter", 0.0))
    except Exception:  # not an image, unreadable header: load_peaks says what is wrong
        return
    if dtype.kind in "biu" and slope == 1.0 and inter == 0.0:
        raise InputError(f"{path}: integer data ({dtype}, no scaling); peak images hold float directions "
                         "(e.g. MRtrix sh2peaks writes float32)")


def resolve_bundle_dir(option: str | None, model: Model) -> Path:
    """--artifacts DIR; else $TRACTSEG_AOT_ARTIFACTS (a bundle dir, or a folder of <model name>/ bundles);
    else artifacts/<model name> in the repository."""
    if option:
        return Path(option)
    env = os.environ.get(ARTIFACTS_ENV)
    if env:
        root = Path(env)
        return root if (root / MANIFEST_NAME).is_file() else root / model.name
    return REPO_ROOT / "artifacts" / model.name


def open_manifest(bundle_dir: Path, model: Model) -> Manifest:
    """The bundle's manifest, refused unless it is the requested model."""
    if not (bundle_dir / MANIFEST_NAME).is_file():
        xtract = " --tract_definition xtract" if model.tract_definition == "xtract" else ""
        raise ArtifactError(f"no bundle for {model.name} at {bundle_dir} (no {MANIFEST_NAME}); build it with "
                            f"`python -m export --task {model.task}{xtract} --download --out {bundle_dir}` "
                            f"or pass --artifacts DIR")
    manifest = load_manifest(bundle_dir)
    manifest.check_request(model.task, model.tract_definition, model.n_classes)
    if manifest.bundles != model.bundles:
        raise ArtifactError(f"{bundle_dir / MANIFEST_NAME}: bundle names differ from upstream's "
                            f"{model.task}/{model.tract_definition} list")
    return manifest


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor or ".")


def check_writable_dir(directory: Path) -> None:
    """``directory`` is, or can be created as, a folder we can write to (probed with a temporary file)."""
    existing = _nearest_existing(directory)
    if not existing.is_dir():
        raise OutputError(f"{directory}: cannot be created, {existing} is not a directory")
    try:
        handle, probe = tempfile.mkstemp(prefix=".tractseg-aot-probe-", dir=existing)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise OutputError(f"{directory}: not writable ({error.strerror or error})") from None


def check_outputs(files: Sequence[Path], force: bool) -> None:
    """Every output's folder is writable and no output exists (or ``force``: it will be replaced)."""
    for folder in dict.fromkeys(f.parent for f in files):
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"{folder}: exists and is not a directory")
        check_writable_dir(folder)
    existing = [f for f in files if f.exists() or f.is_symlink()]
    for f in existing:
        if f.is_dir():
            raise OutputError(f"{f}: is a directory, cannot write an output file there")
    if existing and not force:
        more = f" and {len(existing) - 1} more output(s)" if len(existing) > 1 else ""
        raise OutputError(f"{existing[0]}{more} already exist(s); use --force to overwrite")
