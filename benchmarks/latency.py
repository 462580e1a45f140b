"""Per-batch forward latency, measured round-robin across all runners so that a noisy machine slows every row
alike, and the outputs of the timed calls kept for the drift figures (same inputs for every row)."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.flops import gflops
from benchmarks.runners import Runner


@dataclass(frozen=True)
class Plan:
    warmup: int  # untimed calls before timing (the first one includes lazy compilation)
    budget_s: float  # timed seconds per runner; the repeat count follows from the warm-up latency
    min_repeats: int  # at least this many timed calls (and at least one per check batch)
    max_repeats: int
    slow_s: float  # a runner whose first call takes longer is "slow": no more warm-up, slow_repeats timed calls
    slow_repeats: int  # 0: the first call is the only sample (reported as such)


QUICK = Plan(warmup=2, budget_s=5.0, min_repeats=3, max_repeats=8, slow_s=20.0, slow_repeats=0)
FULL = Plan(warmup=3, budget_s=30.0, min_repeats=5, max_repeats=30, slow_s=30.0, slow_repeats=2)


def _timed(runner: Runner, batch: np.ndarray) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    out = runner.call(batch)
    return time.perf_counter() - t0, out


def measure(runners: list[Runner], batches: list[np.ndarray], plan: Plan,
            log=print) -> dict[str, dict[str, Any]]:
    """{runner id: {"samples_s", "warmup", "first_call_s", "outputs": {batch index: probabilities}}}."""
    state: dict[str, dict[str, Any]] = {}
    for runner in runners:
        first, out = _timed(runner, batches[0])
        entry = {"first_call_s": first, "outputs": {0: out}, "samples_s": [], "warmup": 1}
        if first > plan.slow_s:
            entry["repeats"] = plan.slow_repeats
            if plan.slow_repeats == 0:  # the one call is the sample: no warm-up, noted in the row
                entry["samples_s"], entry["warmup"] = [first], 0
        else:
            latest = first
            for w in range(1, plan.warmup):
                latest, out = _timed(runner, batches[w % len(batches)])
                entry["outputs"].setdefault(w % len(batches), out)
            entry["warmup"] = plan.warmup
            wanted = int(plan.budget_s / max(latest, 1e-6))
            entry["repeats"] = max(plan.min_repeats, len(batches), min(plan.max_repeats, wanted))
        state[runner.id] = entry
        log(f"[bench] {runner.id}: first call {first:.2f} s, {entry['repeats']} timed repeats")
    rounds = max((e["repeats"] for e in state.values()), default=0)
    for r in range(rounds):
        for runner in runners:
            entry = state[runner.id]
            if r < entry["repeats"]:
                seconds, out = _timed(runner, batches[r % len(batches)])
                entry["samples_s"].append(seconds)
                entry["outputs"].setdefault(r % len(batches), out)
    return state


def summary(entry: dict[str, Any], batch_size: int, n_classes: int, size: int) -> dict[str, Any]:
    samples = entry["samples_s"]
    median = statistics.median(samples)
    return {
        "batch_size": batch_size, "warmup_calls": entry["warmup"], "timed_calls": len(samples),
        "first_call_s": round(entry["first_call_s"], 4),
        "median_s": round(median, 4), "min_s": round(min(samples), 4), "max_s": round(max(samples), 4),
        "samples_s": [round(s, 4) for s in samples],
        "ms_per_slice": round(1000 * median / batch_size, 1),
        "gflops": round(gflops(n_classes, size, batch_size, median), 1),
        "note": "single call without warm-up" if entry["warmup"] == 0 else "",
    }
