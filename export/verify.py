"""Load each artifact back, run it on CPU, and compare with the live JAX model before the manifest is written.

The runtime's own backends load the artifacts (the same code a user runs), plus JAX for the .jaxexport file.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from runtime.manifest import Artifact

TOLERANCE = 1e-5  # max abs difference in probability, on CPU


class DriftError(RuntimeError):
    """An artifact whose outputs differ from the live model by more than the tolerance."""


def run_jax_export(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    import jax

    exported = jax.export.deserialize(bytearray(path.read_bytes()))
    return lambda batch: np.asarray(exported.call(batch))


def cpu_runner(bundle_dir: Path, artifact: Artifact, backend: str) -> Callable[[np.ndarray], np.ndarray]:
    path = bundle_dir / artifact.path
    if backend == "jax":
        return run_jax_export(path)
    from runtime.backends import load_artifact

    return load_artifact(backend, path, artifact, "cpu")


def measure_drift(run: Callable[[np.ndarray], np.ndarray], batches: list[np.ndarray],
                  references: list[np.ndarray]) -> dict[str, float]:
    max_abs, total, count = 0.0, 0.0, 0
    for batch, ref in zip(batches, references):
        got = np.asarray(run(batch), dtype=np.float32)
        if got.shape != ref.shape:
            raise DriftError(f"output shape {got.shape} != live model's {ref.shape}")
        diff = np.abs(got - ref)
        max_abs = max(max_abs, float(diff.max()))
        total += float(diff.sum(dtype=np.float64))
        count += diff.size
    return {"max_abs": max_abs, "mean_abs": total / count, "slices": sum(len(b) for b in batches),
            "device": "cpu"}


def verify_artifact(bundle_dir: Path, artifact: Artifact, batches: list[np.ndarray],
                    references: list[np.ndarray], tolerance: float = TOLERANCE) -> dict[str, dict]:
    """Drift of an artifact on every CPU backend that runs it; DriftError naming it when over tolerance."""
    drift = {}
    for backend in artifact.backends:
        figures = measure_drift(cpu_runner(bundle_dir, artifact, backend), batches, references)
        figures["tolerance"] = tolerance
        if not figures["max_abs"] <= tolerance:
            raise DriftError(f"artifact {artifact.id} on {backend}: max abs probability difference "
                             f"{figures['max_abs']:.2e} > {tolerance:.0e} against the live JAX model")
        drift[backend] = figures
    return drift
