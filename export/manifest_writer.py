"""Write manifest.json: export/ builds the typed :class:`runtime.models.manifest.Manifest` (the one definition of the
contract) and writes its JSON form; the runtime reads it back with :func:`runtime.models.manifest.load_manifest`."""
from __future__ import annotations

import datetime
from pathlib import Path

from runtime.models.bundles import Model
from runtime.io.checksum import sha256_of
from runtime.host import package_versions as versions_of
from runtime.models.manifest import (Artifact, FileEntry, Manifest, SelfCheck, WeightsInfo, network_signature)

VERSIONED_PACKAGES = ("jax", "jaxlib", "equinox", "jax2onnx", "onnx", "tensorflow-cpu", "tensorflow",
                      "iree-base-compiler", "iree-base-runtime", "onnxruntime", "openvino", "numpy")
CONTAINS = {"normalisation": "per slice: (x - mean) / (std + 1e-7) over all 9*S*S values, ddof 0",
            "network": "logits", "sigmoid": True}


def contains(model: Model) -> dict[str, object]:
    """What the exported function computes (linear models: TOM, dm_regression, return the raw outputs)."""
    if not model.linear:
        return CONTAINS
    return {**CONTAINS, "network": f"raw outputs (upsample {model.upsample})", "sigmoid": False}


def package_versions() -> dict[str, str]:
    """The export toolchain's versions (those installed) and Python's, recorded in the manifest."""
    return versions_of(VERSIONED_PACKAGES, missing=None)


def file_entries(bundle_dir: Path, rels: list[str]) -> dict[str, FileEntry]:
    return {rel: FileEntry(size=(bundle_dir / rel).stat().st_size, sha256=sha256_of(bundle_dir / rel))
            for rel in rels}


def write_manifest(bundle_dir: Path, model: Model, batch_size: int, slice_size: int,
                   weights: WeightsInfo, artifacts: list[Artifact], self_check: SelfCheck | None = None) -> Path:
    info, inputs, outputs = network_signature(model, batch_size, slice_size)
    manifest = Manifest(
        root=bundle_dir,
        model=info, input=inputs, output=outputs,
        contains=contains(model), weights=weights, artifacts=tuple(artifacts),
        files=file_entries(bundle_dir, [rel for a in artifacts for rel in a.files] +
                           ([self_check.path] if self_check else [])), self_check=self_check,
        versions=package_versions(),
        exported_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    return manifest.write()
