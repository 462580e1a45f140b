"""Full-subject runs on an HCP-size synthetic input: the runtime CLI per backend (its --report gives the stage
breakdown), the live JAX model through the same pipeline in-process (the reference masks), upstream TractSeg."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.machine import REPO, load_average
from runtime.network.backends import Backend
from runtime.models.bundles import model_for
from runtime.models.manifest import Manifest
from runtime.pipeline import TractSegPipeline
from runtime.host import peak_rss_mb


def make_input(directory: Path, shape: tuple[int, int, int], seed: int) -> Path:
    from export.demo_input import write_demo_peaks

    path = directory / f"peaks-{'x'.join(map(str, shape))}-seed{seed}.nii.gz"
    return path if path.is_file() else write_demo_peaks(path, shape, seed)


def run_in_process(peaks: Path, manifest: Manifest, backend: Backend, outdir: Path) -> dict[str, Any]:
    """The runtime's pipeline (runtime.pipeline.TractSegPipeline: predict, then Segmentation.save, what
    runtime.run runs) with any callable backend; used for the live JAX model, whose masks are the reference."""
    # No bundle artifact: the backend is the live model, not a file of the bundle.
    pipeline = TractSegPipeline(model_for(manifest.task, manifest.tract_definition), manifest, None, backend, None)
    t0 = time.perf_counter()
    segmentation = pipeline.predict(peaks)
    t1 = time.perf_counter()
    segmentation.save(outdir, force=True)
    t2 = time.perf_counter()
    stages = {**segmentation.timings, "postprocess_write": round(t2 - t1, 3)}
    return {"measured": True, "wall_s": round(t2 - t0, 3), "stages_s": stages,
            "slices": segmentation.slices.as_dict(), "benchmark_process_peak_rss_mb": peak_rss_mb(),
            "outdir": str(outdir), "how": "in-process"}


def _subprocess(cmd: list[str], env: dict[str, str] | None = None) \
        -> tuple[float, subprocess.CompletedProcess, list[float]]:
    load = load_average()
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    return time.perf_counter() - t0, done, load


def run_cli(peaks: Path, bundle: Path, backend: str, device: str, outdir: Path) -> dict[str, Any]:
    """`python -m runtime.run` as a user runs it; wall time includes process start, imports, loading."""
    report = outdir / "report.json"
    cmd = [sys.executable, "-m", "runtime.run", str(peaks), "--artifacts", str(bundle), "--backend", backend,
           "--device", device, "-o", str(outdir), "--force", "--quiet", "--report", str(report)]
    wall, done, load = _subprocess(cmd)
    result: dict[str, Any] = {"measured": True, "command": " ".join(cmd[1:]), "wall_s": round(wall, 2),
                              "load_average_before": load, "outdir": str(outdir)}
    if done.returncode != 0:
        result.update(measured=False, error=f"exit {done.returncode}: {done.stderr.strip()[-500:]}")
        return result
    rep = json.loads(report.read_text())
    stages = dict(rep.get("timings_s", {}))
    # The runtime reports ru_maxrss, which Linux carries over fork + exec from this (large) parent process: kept
    # under a name that says so, not as the run's own peak memory.
    result.update(stages_s=stages, in_process_total_s=stages.pop("total", None), slices=rep.get("slices"),
                  runtime_reported_ru_maxrss_mb=rep.get("peak_rss_mb"), backend_detail=rep.get("backend"),
                  artifact=(rep.get("artifact") or {}).get("artifact_id"))
    return result


def run_upstream(peaks: Path, seed: int, n_classes: int, workdir: Path) -> dict[str, Any]:
    """Upstream's python_api.run_tractseg on the same input and weights, in its own process."""
    outdir, report = workdir / "out", workdir / "report.json"
    env = {**os.environ, "TRACTSEG_WEIGHTS_DIR": str(workdir / "weights")}
    cmd = [sys.executable, "-m", "benchmarks.upstream_subject", str(peaks), "--seed", str(seed), "--n-classes",
           str(n_classes), "--weights-dir", str(workdir / "weights"), "--out", str(outdir), "--report", str(report)]
    wall, done, load = _subprocess(cmd, env)
    result: dict[str, Any] = {"measured": True, "command": " ".join(cmd[1:]), "load_average_before": load,
                              "outdir": str(outdir)}
    if done.returncode != 0:
        result.update(measured=False, error=f"exit {done.returncode}: {done.stderr.strip()[-500:]}")
        return result
    rep = json.loads(report.read_text())
    setup = rep.pop("checkpoint_setup_s")
    result.update(wall_s=round(wall - setup, 2), checkpoint_setup_s=setup, **rep)
    result["slices"] = {"slices": 432, "run": 432, "skipped": 0}  # upstream runs every slice of its 144 cube
    return result


def extrapolate(batch_median_s: float, batches: int, overhead_s: float, basis: str) -> dict[str, Any]:
    network = batch_median_s * batches
    return {"measured": False, "extrapolated": True, "wall_s": round(network + overhead_s, 1),
            "stages_s": {"network": round(network, 1), "other (median of measured runs)": round(overhead_s, 1)},
            "basis": basis}
