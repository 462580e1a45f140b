"""--report FILE: a JSON record of one run (what ran, on what, from which verified files, how long it took); the
bundle's and the backend's parts of it, and the atomic write."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from runtime.io.atomic import write_text_atomic
from runtime.network.backends import Backend
from runtime.models.manifest import Artifact, Manifest


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
