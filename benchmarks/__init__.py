"""Benchmarks: latency and drift of every artifact of a bundle against the live JAX model and upstream PyTorch,
and what a study costs with the cohort runner.

    python -m benchmarks quick   # CI: a few batches per backend, fails when an fp32 artifact drifts > 1e-5
    python -m benchmarks full    # + more repeats, full-subject wall times through the runtime, Dice of masks
    python -m benchmarks cohort-throughput  # subjects/hour: shell loop of runtime.run vs runtime.cohort settings
    python -m benchmarks cohort-scale       # runtime.cohort's own overhead, rerun time, driver memory at scale

See benchmarks/README.md for what every figure means.
"""
from __future__ import annotations

TOLERANCE = 1e-5  # max abs probability difference of an fp32 artifact vs the live JAX model (export's bound)
MASK_THRESHOLD = 0.5  # a voxel is "in" a per-slice mask when its probability is > 0.5 (upstream's rule)
