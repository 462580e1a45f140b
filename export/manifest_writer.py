"""Write manifest.json (schema: runtime/manifest.py): the contract the runtime loads a bundle by."""
from __future__ import annotations

import dataclasses
import datetime
import json
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from runtime.bundles import Model
from runtime.checksum import sha256_of
from runtime.manifest import FORMAT_VERSION, INPUT_NAME, MANIFEST_NAME, OUTPUT_NAME, Artifact

VERSIONED_PACKAGES = ("jax", "jaxlib", "equinox", "jax2onnx", "onnx", "tensorflow-cpu", "tensorflow",
                      "iree-base-compiler", "iree-base-runtime", "onnxruntime", "openvino", "numpy")


def package_versions() -> dict[str, str]:
    found = {}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    found["python"] = platform.python_version()
    return found


def file_entries(bundle_dir: Path, artifacts: list[Artifact]) -> dict[str, dict[str, Any]]:
    entries = {}
    for artifact in artifacts:
        for rel in artifact.files:
            path = bundle_dir / rel
            entries[rel] = {"size": path.stat().st_size, "sha256": sha256_of(path)}
    return entries


def write_manifest(bundle_dir: Path, model: Model, batch_size: int, slice_size: int,
                   weights: dict[str, Any], artifacts: list[Artifact]) -> Path:
    manifest = {
        "format_version": FORMAT_VERSION,
        "model": {"task": model.task, "tract_definition": model.tract_definition, "n_classes": model.n_classes,
                  "bundles": list(model.bundles), "architecture": "UNet_Pytorch_DeepSup (n_filt 64)"},
        "function": {
            "input": {"name": INPUT_NAME, "shape": [batch_size, 9, slice_size, slice_size], "dtype": "float32",
                      "layout": "raw peak slices (batch, channel, slice axis 1, slice axis 2)"},
            "output": {"name": OUTPUT_NAME, "shape": [batch_size, model.n_classes, slice_size, slice_size],
                       "dtype": "float32"},
            "contains": {"normalisation": "per slice: (x - mean) / (std + 1e-7) over all 9*S*S values, ddof 0",
                         "network": "logits", "sigmoid": True},
        },
        "weights": weights,
        "artifacts": [dataclasses.asdict(a) for a in artifacts],
        "files": file_entries(bundle_dir, artifacts),
        "versions": package_versions(),
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    path = bundle_dir / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    return path
