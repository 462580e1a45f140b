"""manifest.json: the one contract between export/ (which writes it) and the runtime (which reads it).

A bundle directory holds manifest.json plus the artifact files it lists, each with its size and sha256.
Nothing is loaded before its checksum is verified: `Manifest.verified_path(artifact_id)`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.checksum import sha256_of

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
INPUT_NAME = "slices"
OUTPUT_NAME = "probabilities"


class ArtifactError(RuntimeError):
    """A bundle that cannot be used: missing, tampered, or not what was asked for. One-line message."""


@dataclass(frozen=True)
class Artifact:
    """One runnable (or source) artifact of a bundle."""

    id: str  # e.g. "onnx", "savedmodel", "iree-llvm-cpu", "iree-cuda", "jax-export", "stablehlo-cpu"
    format: str  # onnx | savedmodel | vmfb | jaxexport | stablehlo
    path: str  # relative to the bundle dir; a file, or a directory for a SavedModel
    platforms: tuple[str, ...]  # cpu, cuda
    backends: tuple[str, ...]  # runtimes that execute it: onnxruntime, openvino, tensorflow, iree, jax
    files: tuple[str, ...]  # the manifest "files" entries that make it up
    drift: dict[str, Any] = field(default_factory=dict)  # {backend: {"max_abs": .., "mean_abs": ..}} at export
    details: dict[str, Any] = field(default_factory=dict)  # e.g. IREE target flags, ONNX opset


@dataclass(frozen=True)
class Manifest:
    root: Path
    raw: dict[str, Any]
    artifacts: tuple[Artifact, ...]

    @property
    def task(self) -> str:
        return self.raw["model"]["task"]

    @property
    def tract_definition(self) -> str:
        return self.raw["model"]["tract_definition"]

    @property
    def bundles(self) -> tuple[str, ...]:
        return tuple(self.raw["model"]["bundles"])

    @property
    def n_classes(self) -> int:
        return int(self.raw["model"]["n_classes"])

    @property
    def batch_size(self) -> int:
        return int(self.raw["function"]["input"]["shape"][0])

    @property
    def slice_size(self) -> int:
        return int(self.raw["function"]["input"]["shape"][2])

    @property
    def demo_weights(self) -> bool:
        return bool(self.raw["weights"]["demo"])

    @property
    def bundle_id(self) -> str:
        """A short id of this bundle: the first 12 hex digits of the manifest's own sha256."""
        return sha256_of(self.root / MANIFEST_NAME)[:12]

    def artifact(self, artifact_id: str) -> Artifact:
        for a in self.artifacts:
            if a.id == artifact_id:
                return a
        raise ArtifactError(f"{self.root / MANIFEST_NAME}: no artifact {artifact_id!r} "
                            f"(bundle has: {', '.join(a.id for a in self.artifacts)})")

    def find(self, backend: str, platform: str, cpu_flags: frozenset[str] | None = None) -> Artifact | None:
        """The first artifact for backend and platform whose required CPU flags this machine has."""
        flags = host_cpu_flags() if cpu_flags is None else cpu_flags
        for a in self.artifacts:
            needs = set(a.details.get("requires_cpu_flags", ())) if platform == "cpu" else set()
            if backend in a.backends and platform in a.platforms and needs <= flags:
                return a
        return None

    def verify_files(self, artifact: Artifact) -> dict[str, str]:
        """Check size and sha256 of every file of an artifact; returns {file: sha256}."""
        checked = {}
        for rel in artifact.files:
            entry = self.raw["files"].get(rel)
            path = self.root / rel
            if entry is None:
                raise ArtifactError(f"{self.root / MANIFEST_NAME}: artifact {artifact.id!r} lists {rel!r} "
                                    "but the manifest has no checksum for it")
            if not path.is_file():
                raise ArtifactError(f"{path}: artifact file missing (bundle {self.root})")
            if path.stat().st_size != entry["size"]:
                raise ArtifactError(f"{path}: size {path.stat().st_size} != {entry['size']} in the manifest "
                                    "(tampered or truncated artifact)")
            digest = sha256_of(path)
            if digest != entry["sha256"]:
                raise ArtifactError(f"{path}: sha256 {digest[:12]}... != {entry['sha256'][:12]}... in the manifest "
                                    "(tampered artifact)")
            checked[rel] = digest
        return checked

    def verified_path(self, artifact: Artifact) -> Path:
        """The artifact's path, after its files' checksums are verified."""
        self.verify_files(artifact)
        return self.root / artifact.path

    def check_request(self, task: str, tract_definition: str, n_classes: int) -> None:
        """Refuse a bundle whose model is not the one requested."""
        if (self.task, self.tract_definition, self.n_classes) != (task, tract_definition, n_classes):
            raise ArtifactError(
                f"{self.root / MANIFEST_NAME}: bundle is {self.task}/{self.tract_definition} with "
                f"{self.n_classes} classes, but {task}/{tract_definition} with {n_classes} classes was requested")


def host_cpu_flags() -> frozenset[str]:
    """CPU feature flags of this machine (Linux /proc/cpuinfo; empty where unreadable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


REQUIRED_KEYS = ("format_version", "model", "function", "weights", "artifacts", "files", "versions", "exported_at")


def load_manifest(bundle_dir: str | Path) -> Manifest:
    """Read and validate a bundle's manifest.json (structure only; checksums are checked per artifact)."""
    root = Path(bundle_dir)
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"{path}: no manifest (build a bundle with `python -m export ... --out {root}`)")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: not valid JSON ({e})") from None
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise ArtifactError(f"{path}: missing keys {missing}")
    if raw["format_version"] != FORMAT_VERSION:
        raise ArtifactError(f"{path}: format_version {raw['format_version']} is not {FORMAT_VERSION}")
    if len(raw["model"]["bundles"]) != raw["model"]["n_classes"]:
        raise ArtifactError(f"{path}: {len(raw['model']['bundles'])} bundle names for "
                            f"{raw['model']['n_classes']} classes")
    artifacts = tuple(
        Artifact(id=a["id"], format=a["format"], path=a["path"], platforms=tuple(a["platforms"]),
                 backends=tuple(a["backends"]), files=tuple(a["files"]), drift=a.get("drift", {}),
                 details=a.get("details", {}))
        for a in raw["artifacts"])
    return Manifest(root=root, raw=raw, artifacts=artifacts)
