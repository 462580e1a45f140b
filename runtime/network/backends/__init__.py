"""Inference backends: each runs one artifact of a bundle on a fixed batch (B, 9, S, S) -> (B, C, S, S).

Every backend is an optional dependency, imported only when chosen. None falls back silently to another
device: asking for cuda and getting cpu is an error.
"""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Protocol

import numpy as np

from runtime.errors import ArtifactError, BackendError, one_line
from runtime.models.manifest import Artifact, Manifest

# name -> (module with the backend, python package that must be installed, pip extra)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "onnxruntime": ("runtime.network.backends.onnxruntime_backend", "onnxruntime", "onnxruntime"),
    "openvino": ("runtime.network.backends.openvino_backend", "openvino", "openvino"),
    "iree": ("runtime.network.backends.iree_backend", "iree.runtime", "iree"),
    "tensorflow": ("runtime.network.backends.tensorflow_backend", "tensorflow", "tensorflow"),
}
# how a backend's C++ says it ran out of memory (ONNX Runtime, OpenVINO: std::bad_alloc or their own words)
OUT_OF_MEMORY = ("bad_alloc", "Failed to allocate", "out of memory", "Cannot allocate memory")
# `--backend auto`: the fastest installed backend for the device, measured on this project's benchmark
# (benchmarks/README.md). OpenVINO has no CUDA device.
AUTO_ORDER = {
    "cpu": ("openvino", "onnxruntime", "iree", "tensorflow"),
    "cuda": ("onnxruntime", "iree", "tensorflow"),
}


class Backend(Protocol):
    name: str
    device: str  # the device really in use (cpu / cuda), checked, not assumed
    version: str
    detail: str  # e.g. the execution provider or driver really in use

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


def is_installed(name: str) -> bool:
    package = BACKENDS[name][1]
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def installed_backends() -> list[str]:
    return [name for name in BACKENDS if is_installed(name)]


def can_run_cuda(name: str) -> bool:
    """Whether an installed backend can really run on CUDA here: a GPU driver that loads AND a build of the
    backend with CUDA (onnxruntime's CPU wheel cannot, OpenVINO never can). Imports the backend only when a
    GPU driver is present."""
    if name == "openvino" or not is_installed(name) or not cuda_available():
        return False
    try:
        if name == "onnxruntime":
            import onnxruntime

            return "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        if name == "iree":
            import iree.runtime

            return "cuda" in iree.runtime.query_available_drivers()
        if name == "tensorflow":
            import tensorflow

            return bool(tensorflow.config.list_physical_devices("GPU"))
    except Exception:  # a backend that cannot even say: not for auto
        return False
    return False


def choose(backend: str, device: str, manifest: Manifest, precision: str = "fp32") -> tuple[str, str]:
    """Resolve 'auto' for backend and device to a concrete (backend, device) with an artifact of that precision
    in the bundle. ``device="auto"`` takes CUDA only for a backend that can really run there
    (:func:`can_run_cuda`), else CPU. A precision the bundle lacks is an ArtifactError, never another precision."""
    if precision not in manifest.precisions:
        from runtime.network.precision import missing_precision

        raise missing_precision(manifest, precision)
    devices = ["cuda", "cpu"] if device == "auto" else [device]
    for dev in devices:
        names = AUTO_ORDER[dev] if backend == "auto" else (backend,)
        for name in names:
            if backend == "auto" and not is_installed(name):
                continue
            if dev == "cuda" and device == "auto" and not can_run_cuda(name):
                continue
            if manifest.find(name, dev, precision=precision) is not None:
                return name, dev
    if backend != "auto" and not is_installed(backend):
        raise BackendError(f"backend {backend!r} is not installed: pip install 'tractseg-aot[{BACKENDS[backend][2]}]'")
    raise BackendError(f"no {precision} artifact in {manifest.root} for backend {backend!r} on device {device!r} "
                       f"(installed backends: {', '.join(installed_backends()) or 'none'})")


def cuda_available() -> bool:
    """Whether an NVIDIA GPU is visible (driver present), without importing any framework."""
    import ctypes

    try:
        lib = ctypes.CDLL("libcuda.so.1")
        count = ctypes.c_int(0)
        return lib.cuInit(0) == 0 and lib.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
    except OSError:
        return False


def open_backend(name: str, device: str, manifest: Manifest, nr_cpus: int | None = None,
                 precision: str = "fp32", dropout: bool = False) -> Backend:
    """Verify the artifact's checksums, then load it on the named backend and device (``dropout``: the
    bundle's dropout model, for ``--uncertainty``; it takes ``(batch, mask)``)."""
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r} (known: {', '.join(BACKENDS)})")
    if not is_installed(name):
        raise BackendError(f"backend {name!r} is not installed: pip install 'tractseg-aot[{BACKENDS[name][2]}]'")
    artifact = manifest.find(name, device, precision=precision, dropout=dropout)
    if artifact is None and dropout:
        has = sorted({b for a in manifest.artifacts if a.is_dropout for b in a.backends})
        raise ArtifactError(f"{manifest.root}: --uncertainty needs the bundle's dropout model, " + (
            f"which runs on {' or '.join(has)}, not {name}: pass --backend {has[0]}" if has else
            "which this bundle lacks (a tract_segmentation bundle built now has one: rebuild it with "
            "tractseg-aot-download --task tract_segmentation --force, or python -m export --task "
            "tract_segmentation ... --formats onnx)"))
    if artifact is None:
        raise ArtifactError(f"{manifest.root}: no {precision} artifact for backend {name!r} on {device}")
    return load_artifact(name, manifest.verified_path(artifact), artifact, device, nr_cpus)


def load_artifact(name: str, path: Path, artifact: Artifact, device: str, nr_cpus: int | None = None) -> Backend:
    """Load an artifact file on a backend: the one loader of the runtime (after :func:`open_backend` verified the
    checksums), the export's verification and the benchmarks. Failures are one-line BackendErrors."""
    module = importlib.import_module(BACKENDS[name][0])
    try:
        return module.load(path, artifact, device, nr_cpus)
    except BackendError:
        raise
    except MemoryError:
        raise BackendError(f"{path}: out of memory while {name} loaded it") from None
    except Exception as error:  # the checksum matched, yet the backend cannot read it (or the device failed)
        text = one_line(error, 240)
        if any(sign in text for sign in OUT_OF_MEMORY):
            raise BackendError(f"{path}: out of memory while {name} loaded it ({text})") from None
        raise BackendError(f"{path}: {name} cannot load it ({text})") from None
