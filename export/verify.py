"""Load each artifact back, run it, and compare with the live JAX model (run on CPU) before the manifest is written.

The runtime's own backends load the artifacts (the same code a user runs), plus JAX for the .jaxexport file.
CPU artifacts run on the export host's CPU. CUDA artifacts run on its GPU when it has one that the backend can
use (recorded under the key "<backend>:cuda"), else they are recorded as not run.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from runtime.models.manifest import Artifact

# Max abs difference in probability, CPU and GPU alike: fp32 artifacts drift ~6e-6 on the check slices on both
# (measured: CPU backends 5e-6 to 6e-6; on an H200, the .jaxexport 5.9e-6 and IREE cuda 6.1e-6, scripts/gpu_check.py).
TOLERANCE = 1e-5
# Linear outputs (TOM, dm_regression: no sigmoid) are gated on the raw outputs: max abs difference 1e-4. The
# sigmoid that divides a logit's fp32 rounding error by 4 or more is absent, and the error grows with the values:
# demo weights (He-scaled random, raw outputs up to ~10 in magnitude) drift 1.0e-5 to 1.9e-5 on the check slices
# (ONNX on onnxruntime / openvino, S=16); upstream's real TOM outputs are peak vectors of length <= ~1 and density
# maps lie in [0, 1]. A wrong op or weight moves the outputs by O(0.1-1).
LINEAR_TOLERANCE = 1e-4


def tolerance_for(linear: bool) -> float:
    """The drift gate of a model: TOLERANCE on probabilities, LINEAR_TOLERANCE on raw outputs."""
    return LINEAR_TOLERANCE if linear else TOLERANCE


class DriftError(RuntimeError):
    """An artifact whose outputs differ from the live model by more than the tolerance."""


def run_jax_export(path: Path, device: str = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    import jax

    exported = jax.export.deserialize(bytearray(path.read_bytes()))
    target = jax.devices(device)[0]

    def run(batch: np.ndarray) -> np.ndarray:
        with jax.default_device(target):
            return np.asarray(exported.call(jax.device_put(batch, target)))
    return run


def gpu_backends(artifact: Artifact) -> list[str]:
    """The artifact's backends that can run it on a GPU of this host (none on a host without one)."""
    if "cuda" not in artifact.platforms:
        return []
    from runtime.network.backends import can_run_cuda

    found = []
    for backend in artifact.backends:
        if backend == "jax":
            import jax

            try:
                if jax.devices("cuda"):
                    found.append(backend)
            except RuntimeError:
                pass
        elif can_run_cuda(backend):
            found.append(backend)
    return found


def runner(bundle_dir: Path, artifact: Artifact, backend: str,
           device: str = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    path = bundle_dir / artifact.path
    if backend == "jax":
        return run_jax_export(path, device)
    from runtime.network.backends import load_artifact

    return load_artifact(backend, path, artifact, device)


def drift_figures(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict[str, float | int | None]:
    """Max and mean absolute difference over (output, reference) pairs, in float32 (the mean summed in float64),
    and how many values were compared; DriftError when a pair's shapes differ. The export's gate and the
    benchmarks' drift rows both use it."""
    max_abs, total, count = 0.0, 0.0, 0
    for got, ref in pairs:
        got, ref = np.asarray(got, dtype=np.float32), np.asarray(ref, dtype=np.float32)
        if got.shape != ref.shape:
            raise DriftError(f"output shape {got.shape} != reference {ref.shape}")
        diff = np.abs(got - ref)
        max_abs = max(max_abs, float(diff.max()))
        total += float(diff.sum(dtype=np.float64))
        count += diff.size
    return {"max_abs": max_abs, "mean_abs": total / count if count else None, "values": count}


def measure_drift(run: Callable[[np.ndarray], np.ndarray], batches: list[np.ndarray],
                  references: list[np.ndarray], device: str = "cpu") -> dict[str, float]:
    figures = drift_figures((run(batch), ref) for batch, ref in zip(batches, references))
    return {"max_abs": figures["max_abs"], "mean_abs": figures["mean_abs"], "slices": sum(len(b) for b in batches),
            "device": device}


def verify_artifact(bundle_dir: Path, artifact: Artifact, batches: list[np.ndarray],
                    references: list[np.ndarray], tolerance: float = TOLERANCE, cpu: bool = True) -> dict[str, dict]:
    """Drift of an artifact on every backend that runs it here (CPU when `cpu`, and the GPU when there is one),
    against the live model's CPU outputs; DriftError naming it when over the tolerance."""
    runs = [(backend, "cpu", backend) for backend in artifact.backends if cpu]
    runs += [(backend, "cuda", f"{backend}:cuda") for backend in gpu_backends(artifact)]
    drift = {}
    for backend, device, key in runs:
        figures = measure_drift(runner(bundle_dir, artifact, backend, device), batches, references, device)
        figures["tolerance"] = tolerance
        if not figures["max_abs"] <= tolerance:
            raise DriftError(f"artifact {artifact.id} on {backend} ({device}): max abs output difference "
                             f"{figures['max_abs']:.2e} > {tolerance:.2e} against the live JAX model")
        drift[key] = figures
    return drift
