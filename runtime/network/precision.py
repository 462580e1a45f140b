"""`--precision` and the host self-check.

fp32 is the exact path (the masks equal upstream's). bf16 (OpenVINO's bf16 inference precision on the bundle's
ONNX), int8 (a statically quantized ONNX) and fp16 (an fp16 ONNX for CUDA) are faster with a loss that the export
measured on the bundle's own weights and recorded in the manifest. A precision the bundle lacks, or one this host
cannot run natively, is a one-line error: never a silent fallback to another precision.

Self-check: the bundle carries a check batch and the live model's fp32 outputs for it (every `stride`-th pixel).
When a backend opens, that batch runs once and its max abs difference from the reference must stay within
SELF_CHECK_FACTOR x the drift the export recorded for this (artifact, backend) plus SELF_CHECK_MARGIN. A backend
that computes garbage on this host (a miscompiled kernel, a corrupt or substituted model file with a re-signed
manifest, a broken bf16 GEMM) fails here, before anything is written. Cost: one batch.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from runtime.errors import ArtifactError, BackendError
from runtime.models.manifest import Artifact, Manifest, host_cpu_flags

BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # the CPU instructions that compute bf16 natively
# Limit = 2 x recorded + 1e-5: a same-precision run on another CPU or GPU changes only the summation order (fp32
# artifacts on the check slices: 4.9e-6 to 5.8e-6 on an AVX2 EPYC, 5.75e-6 on an AVX-512 Xeon, 6.1e-6 on an
# H200; all under 1e-5), while a wrong model or kernel moves probabilities by O(0.1-1).
SELF_CHECK_FACTOR = 2.0
SELF_CHECK_MARGIN = 1e-5


def check_host(precision: str, device: str, flags: frozenset[str] | None = None) -> None:
    """Refuse a precision this host cannot run natively (one line)."""
    flags = host_cpu_flags() if flags is None else flags
    if precision == "bf16" and device == "cpu" and not flags & BF16_CPU_FLAGS:
        raise BackendError("--precision bf16 needs a CPU with AVX512_BF16 or AMX (this one has neither; "
                           "OpenVINO would emulate bf16 more slowly than fp32): use --precision fp32")
    if precision == "fp16" and device != "cuda":
        raise BackendError("--precision fp16 is for CUDA GPUs (--device cuda); on a CPU use fp32, int8 or bf16")


def missing_precision(manifest: Manifest, precision: str) -> ArtifactError:
    return ArtifactError(f"{manifest.root}: the bundle has no {precision} artifact (it has: "
                         f"{', '.join(manifest.precisions)}); export one with python -m export ... "
                         f"--precisions {precision}")


def recorded_drift(artifact: Artifact, backend: str, device: str) -> float | None:
    """The max abs drift the export measured for this artifact on this backend (and device, when recorded)."""
    figures = artifact.drift.get(f"{backend}:cuda" if device == "cuda" else backend) or artifact.drift.get(backend)
    value = (figures or {}).get("max_abs")
    return float(value) if isinstance(value, (int, float)) else None


def self_check(run: Any, manifest: Manifest, artifact: Artifact, backend: str, device: str) -> dict[str, Any]:
    """Run the bundle's check batch once on an opened backend; ArtifactError (one line, both numbers) when its
    outputs drift past the limit. Returns the figures for the report."""
    if manifest.self_check is None:
        return {"skipped": "bundle has no self-check batch (exported before it existed)"}
    recorded = recorded_drift(artifact, backend, device)
    if recorded is None:
        raise ArtifactError(f"{manifest.root}: no drift recorded for artifact {artifact.id} on {backend}: "
                            "the self-check has nothing to compare with (re-export, or --no-self-check)")
    check = manifest.self_check
    path = manifest.root / check.path
    manifest.verify_file(check.path)
    started = time.perf_counter()
    try:
        with np.load(path, allow_pickle=False) as stored:
            batch, reference = stored["input"], stored["reference"]
    except (OSError, ValueError, KeyError) as error:
        raise ArtifactError(f"{path}: unreadable self-check batch ({error})") from None
    if batch.shape != manifest.input.shape or reference.shape[:2] != (manifest.batch_size, manifest.n_classes):
        raise ArtifactError(f"{path}: self-check arrays {batch.shape} / {reference.shape} do not fit the model")
    got = np.asarray(run(batch.astype(np.float32)), dtype=np.float32)[:, :, ::check.stride, ::check.stride]
    drift = float(np.abs(got - reference).max()) if got.shape == reference.shape else float("inf")
    limit = SELF_CHECK_FACTOR * recorded + SELF_CHECK_MARGIN
    figures = {"max_abs": drift, "recorded_max_abs": recorded, "limit": limit,
               "seconds": round(time.perf_counter() - started, 3)}
    if not drift <= limit:
        raise ArtifactError(f"self-check failed: {artifact.id} ({artifact.precision}) on {backend}/{device} drifts "
                            f"{drift:.3g} from the bundle's reference outputs, more than the {limit:.3g} allowed "
                            f"(export recorded {recorded:.3g}); nothing was written")
    return figures
