"""The MNI FA template that ``--preprocess`` registers to: upstream TractSeg's
``tractseg/resources/MNI_FA_template.nii.gz`` (145x174x145, 1.25 mm, LAS, FA in [0, 0.91]).

Looked for, in order: the file given (``--mni-template FILE``); the installed ``TractSeg`` package's resource,
found through its distribution record (``importlib.metadata``) or its import spec, never by importing it (tractseg
imports torch); the per-user cache ``$XDG_CACHE_HOME/tractseg-aot/MNI_FA_template.nii.gz`` (default
``~/.cache/...``), accepted only with the sha256 of TractSeg 2.10's file. :func:`download_template` fills the cache
from upstream's repository (checked against that sha256 before it is renamed into place)."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import tempfile
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np

from runtime.errors import InputError, one_line
from runtime.io.checksum import sha256_of

TEMPLATE_NAME = "MNI_FA_template.nii.gz"
TEMPLATE_RESOURCE = f"tractseg/resources/{TEMPLATE_NAME}"
TEMPLATE_SHA256 = "3a047037655723292724335508967f671d5ba9a92acfa17af51274147f2924bd"  # TractSeg 2.10, 3,303,127 B
TEMPLATE_URL = f"https://github.com/MIC-DKFZ/TractSeg/raw/master/{TEMPLATE_RESOURCE}"
HOW_TO_GET = (f"pass --mni-template FILE, or pip install TractSeg (it ships {TEMPLATE_RESOURCE}), or run "
              "python -c 'from runtime.preprocess import download_template; download_template()'")


def template_cache_path() -> Path:
    """``$XDG_CACHE_HOME/tractseg-aot/MNI_FA_template.nii.gz`` (default ``~/.cache/tractseg-aot/...``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "tractseg-aot" / TEMPLATE_NAME


def installed_template() -> Path | None:
    """The installed TractSeg package's template, or None; tractseg itself is never imported."""
    try:
        located = Path(str(importlib.metadata.distribution("TractSeg").locate_file(TEMPLATE_RESOURCE)))
        if located.is_file():
            return located
    except (importlib.metadata.PackageNotFoundError, OSError, ValueError):
        pass
    try:  # a checkout on sys.path without a distribution record; find_spec of a top-level package runs nothing
        spec = importlib.util.find_spec("tractseg")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "resources" / TEMPLATE_NAME
        if candidate.is_file():
            return candidate
    return None


def find_template(path: str | os.PathLike[str] | None = None) -> Path:
    """``path`` (``--mni-template``); else the installed TractSeg's template; else the verified cache file.
    Raises :class:`InputError` with one line saying how to get it when there is none."""
    if path is not None:
        given = Path(path)
        if not given.is_file():
            raise InputError(f"{given}: --mni-template: no such file")
        return given
    installed = installed_template()
    if installed is not None:
        return installed
    cached = template_cache_path()
    if cached.is_file():
        if sha256_of(cached) != TEMPLATE_SHA256:
            raise InputError(f"{cached}: not TractSeg's MNI FA template (sha256 differs): delete it and {HOW_TO_GET}")
        return cached
    raise InputError(f"no MNI FA template for --preprocess: {HOW_TO_GET}")


def load_template(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """The template's voxels (float32, 3D, NaN as 0) and affine; one line naming the file when unusable."""
    try:
        image = nib.load(str(path))
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as error:  # noqa: BLE001 - nibabel raises many types for a bad file
        raise InputError(f"{path}: cannot read the MNI template: {one_line(error, 150)}") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3 or min(data.shape) < 8:
        raise InputError(f"{path}: the MNI template must be a 3D image, not shape {data.shape}")
    data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    if not np.any(data > 0) or not np.isfinite(image.affine).all():
        raise InputError(f"{path}: the MNI template is empty or has a non-finite affine")
    return data, np.asarray(image.affine, dtype=np.float64)


def download_template(dest: str | os.PathLike[str] | None = None, url: str = TEMPLATE_URL,
                      timeout_s: float = 60.0) -> Path:
    """Fetch the template into ``dest`` (default :func:`template_cache_path`), keeping it only when its sha256 is
    TractSeg 2.10's; the file appears whole or not at all."""
    target = Path(dest) if dest is not None else template_cache_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, part = tempfile.mkstemp(prefix=f".{TEMPLATE_NAME}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as response:
            while block := response.read(1 << 17):
                out.write(block)
        if sha256_of(part) != TEMPLATE_SHA256:
            raise InputError(f"{url}: the downloaded template's sha256 is not TractSeg 2.10's; nothing was saved")
        os.replace(part, target)
    except OSError as error:
        raise InputError(f"{url}: cannot download the MNI template: {one_line(error, 150)}") from None
    finally:
        if os.path.exists(part):
            os.unlink(part)
    return target
