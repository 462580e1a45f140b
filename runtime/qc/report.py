"""--report FILE: a JSON record of one run (what ran, on what, from which verified files, how long it took)."""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import resource
import sys
from importlib.metadata import PackageNotFoundError, version
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runtime.io.atomic import write_text_atomic
from runtime.network.backends import Backend
from runtime.models.manifest import Artifact, Manifest

PACKAGES = ("tractseg-aot", "numpy", "scipy", "nibabel", "tqdm")


def package_versions(packages: Sequence[str] = PACKAGES, missing: str | None = "not installed") -> dict[str, str]:
    """Python's version and each package's (the run report, the export manifest and the benchmarks all use this
    one); a package that is not installed is recorded as ``missing``, or left out when ``missing`` is None."""
    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            if missing is not None:
                found[name] = missing
    return found


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    Linux: VmHWM from /proc/self/status. ru_maxrss is not used there: Linux carries it over fork + exec, so a
    CLI started by a 2 GB parent reported the parent's peak (measured: 1934 MB for a 13 MB child).
    """
    try:
        with open("/proc/self/status") as status:
            lines = status.read().splitlines()
        for line in lines:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1 << 20 if sys.platform == "darwin" else 1 << 10), 1)


def artifact_record(manifest: Manifest, artifact: Artifact) -> dict[str, Any]:
    """The artifact and the checksums it was verified against when the backend opened it."""
    return {
        "bundle_dir": str(manifest.root.resolve()),
        "bundle_id": manifest.bundle_id,
        "artifact_id": artifact.id,
        "format": artifact.format,
        "files": {rel: manifest.files[rel].sha256 for rel in artifact.files},
        "weights": dataclasses.asdict(manifest.weights),
        "exported_at": manifest.exported_at,
        "export_versions": manifest.versions,
    }


def backend_record(backend: Backend, batch_size: int, nr_cpus: int | None) -> dict[str, Any]:
    return {"name": backend.name, "device": backend.device, "version": backend.version, "detail": backend.detail,
            "batch_size": batch_size, "nr_cpus": nr_cpus}


def write_report(report: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the JSON atomically."""
    return write_text_atomic(path, json.dumps(report, indent=1, default=str) + "\n")
