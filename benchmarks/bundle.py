"""The bundle under test: built once with the export CLI from seeded random weights and cached by a hash of the
export sources and arguments, or an existing bundle given with --bundle (read only)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
import hashlib
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from runtime.models.manifest import Manifest, load_manifest

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "benchmarks" / "out"
# Everything that shapes a bundle; a change to any of these rebuilds the cached one.
EXPORT_INPUTS = (sorted((REPO / "export").glob("*.py")) + sorted((REPO / "runtime" / "models").glob("*.py"))
                 + [REPO / "runtime" / "io" / "checksum.py"])


def export_args(seed: int, size: int, batch_size: int, formats: str, platforms: str,
                task: str = "tract_segmentation") -> list[str]:
    return ["--task", task, "--random-weights", str(seed), "--slice-size", str(size), "--batch-size",
            str(batch_size), "--formats", formats, "--platforms", platforms]


def cached_bundle(args: list[str], cache: Path = OUT / "bundles", log=print) -> tuple[Path, dict[str, Any]]:
    """(bundle dir, how it was obtained); builds with `python -m export` on a cache miss."""
    key = hashlib.sha256(" ".join(args).encode())
    for path in EXPORT_INPUTS:
        key.update(path.name.encode() + path.read_bytes())
    out = cache / f"bundle-{key.hexdigest()[:16]}"
    if (out / "manifest.json").is_file():
        return out, {"cached": True, "export_args": args}
    cache.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out, ignore_errors=True)
    log(f"[bench] building bundle: python -m export {' '.join(args)} --out {out}")
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "export", *args, "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"python -m export failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return out, {"cached": False, "export_args": args, "build_s": round(time.perf_counter() - t0, 1)}


def random_seed(manifest: Manifest) -> int:
    """The seed of a bundle built with --random-weights (the live model is rebuilt from it)."""
    if manifest.weights.seed is None:
        raise ValueError(f"{manifest.root}: weights are {manifest.weights.source!r}; the benchmark needs a bundle "
                         "built with --random-weights SEED so that it can rebuild the same live model")
    return manifest.weights.seed


def describe(manifest: Manifest) -> dict[str, Any]:
    return {"dir": str(manifest.root.resolve()), "bundle_id": manifest.bundle_id, "task": manifest.task,
            "tract_definition": manifest.tract_definition, "n_classes": manifest.n_classes,
            "batch_size": manifest.batch_size, "slice_size": manifest.slice_size,
            "weights": dataclasses.asdict(manifest.weights), "exported_at": manifest.exported_at,
            "artifacts": [a.id for a in manifest.artifacts],
            "export_drift": {a.id: a.drift for a in manifest.artifacts}}


def open_bundle(path: Path) -> Manifest:
    return load_manifest(path)


@dataclass(frozen=True)
class BenchStart:
    """What every benchmark command begins with: its clock, start stamp, results folder, machine facts, and the
    bundle (given with --bundle, or built/reused from the cache)."""

    t0: float
    started: str
    outdir: Path
    machine: dict[str, Any]
    path: Path
    how: dict[str, Any]
    manifest: Manifest


def start_run(mode: str, out: Path | None, bundle: Path | None, export: list[str], log=print) -> BenchStart:
    from datetime import datetime, timezone

    from benchmarks.machine import machine_info

    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    machine = machine_info()
    log(f"[bench] {mode}: {machine['cpu_model']}, load average {machine['load_average_at_start']}")
    if bundle:
        path, how = Path(bundle), {"reused": str(bundle)}
    else:
        path, how = cached_bundle(export, log=log)
    outdir = out or OUT / f"{started.replace(':', '')}-{mode}"
    return BenchStart(t0, started, Path(outdir), machine, path, how, open_bundle(path))
