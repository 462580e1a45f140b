"""manifest.json: the one contract between export/ (which writes it) and the runtime (which reads it).

The manifest is typed: export/ builds a :class:`Manifest` and writes :meth:`Manifest.to_dict`; the runtime reads it
back with :func:`load_manifest`, which validates every field against the schema (:mod:`runtime.models.manifest_schema`)
and checks that every referenced file exists inside the bundle with its recorded size, so a hostile or broken
manifest is one :class:`ArtifactError` line, never a ``KeyError`` deep in a run. Nothing is loaded before its
sha256 is verified: :meth:`Manifest.verified_path`.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.models.bundles import Model
from runtime.io.checksum import sha256_of
from runtime.errors import ArtifactError
from runtime.models.manifest_schema import CONV_ALGORITHMS, PRECISIONS, parse_manifest

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
INPUT_NAME = "slices"
OUTPUT_NAME = "probabilities"
MASK_NAME = "dropout_mask"  # the dropout model's second input (--uncertainty), pool_4's shape
# details["function"] of the dropout model (slices, mask) -> probabilities; absent: the plain model
DROPOUT_FUNCTION = "dropout"
PEAK_CHANNELS = 9  # the network's input channels: three peaks x (x, y, z)

__all__ = ["ArtifactError", "Artifact", "CONV_ALGORITHMS", "FileEntry", "Manifest", "ModelInfo", "PRECISIONS",
           "SelfCheck", "TensorSpec", "WeightsInfo", "load_manifest", "host_cpu_flags", "network_signature"]


@dataclass(frozen=True)
class ModelInfo:
    task: str  # tract_segmentation | endings_segmentation
    tract_definition: str  # TractQuerier+ | xtract
    n_classes: int
    bundles: tuple[str, ...]  # output names, in order (TOM: each has channels_per_bundle = 3 channels)
    architecture: str = "UNet_Pytorch_DeepSup (n_filt 64)"
    channels_per_bundle: int = 1  # TOM: 3 (x, y, z of the bundle's orientation)
    linear: bool = False  # raw network outputs (TOM, dm_regression), not sigmoid probabilities
    part: str = ""  # "Part1".."Part4": one of TOM's part models


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    layout: str = ""


def network_signature(model: Model, batch_size: int, slice_size: int) -> tuple[ModelInfo, TensorSpec, TensorSpec]:
    """A bundle's model and I/O signature for ``model`` traced at ``batch_size`` x ``slice_size`` (what every
    manifest writer records: the export's and runtime.weights')."""
    info = ModelInfo(task=model.task, tract_definition=model.tract_definition, n_classes=model.n_classes,
                     bundles=tuple(model.bundles), channels_per_bundle=model.channels_per_bundle,
                     linear=model.linear, part=model.part)
    return (info, TensorSpec(INPUT_NAME, (batch_size, PEAK_CHANNELS, slice_size, slice_size), "float32",
                             "raw peak slices (batch, channel, slice axis 1, slice axis 2)"),
            TensorSpec(OUTPUT_NAME, (batch_size, model.n_classes, slice_size, slice_size), "float32"))


@dataclass(frozen=True)
class WeightsInfo:
    source: str  # a file path, or "random (seed N, He-scaled)"
    sha256: str | None
    demo: bool  # random weights: outputs are not anatomy
    seed: int | None = None  # for demo weights: the seed that rebuilds the same live model
    note: str = ""


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str


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
    precision: str = "fp32"  # what it computes in: fp32 (exact path) | bf16 | int8 | fp16 (runtime --precision)
    # {3x3 layer: direct | winograd2 | winograd4} as written into the graph (python -m export --conv-algorithm);
    # empty: every layer direct (also what bundles exported before the field existed mean)
    conv_algorithms: dict[str, str] = field(default_factory=dict)

    @property
    def is_dropout(self) -> bool:
        """The dropout model of ``--uncertainty`` (``details.function``), not the plain one."""
        return self.details.get("function") == DROPOUT_FUNCTION

    @property
    def mask_shape(self) -> tuple[int, ...]:
        """The dropout model's mask input shape, pool_4's (B, 512, S/16, S/16), as its details record it."""
        return tuple(self.details["dropout"]["mask_shape"])

    def conv_algorithm(self, layer: str) -> str:
        return self.conv_algorithms.get(layer, "direct")


@dataclass(frozen=True)
class SelfCheck:
    """A check batch and the live model's fp32 outputs for it (every `stride`-th pixel of each slice), run once when
    a backend opens (:mod:`runtime.network.precision`)."""

    path: str  # an .npz (no pickle) with arrays "input" (B, 9, S, S) and "reference" (B, C, S/stride, S/stride)
    stride: int
    source: str = ""  # where the batch's slices come from


@dataclass(frozen=True)
class Manifest:
    root: Path
    model: ModelInfo
    input: TensorSpec  # (batch, 9, S, S)
    output: TensorSpec  # (batch, C, S, S)
    contains: dict[str, Any]  # what the exported function computes (normalisation, sigmoid)
    weights: WeightsInfo
    artifacts: tuple[Artifact, ...]
    files: dict[str, FileEntry]
    versions: dict[str, str]
    exported_at: str
    format_version: int = FORMAT_VERSION
    self_check: SelfCheck | None = None
    # TOM: its part models, run one at a time; each is a one-model Manifest over this bundle's root and files.
    # The whole then has no artifacts of its own; its input / output specs are the first part's.
    parts: tuple[Manifest, ...] = ()

    task = property(lambda self: self.model.task)
    tract_definition = property(lambda self: self.model.tract_definition)
    bundles = property(lambda self: self.model.bundles)
    n_classes = property(lambda self: self.model.n_classes)
    batch_size = property(lambda self: self.input.shape[0])
    slice_size = property(lambda self: self.input.shape[2])
    demo_weights = property(lambda self: self.weights.demo)

    @property
    def bundle_id(self) -> str:
        """A short id of this bundle: the first 12 hex digits of the manifest's own sha256."""
        return sha256_of(self.root / MANIFEST_NAME)[:12]

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (what export/ writes; :func:`load_manifest` reads it back to an equal Manifest)."""
        if self.parts:
            return {"format_version": self.format_version, "model": self._model_dict(),
                    "weights": dataclasses.asdict(self.weights),
                    "parts": [{k: v for k, v in part.to_dict().items() if k not in ("format_version", "files",
                                                                                     "versions", "exported_at")}
                              for part in self.parts],
                    "files": {rel: dataclasses.asdict(entry) for rel, entry in self.files.items()},
                    "versions": self.versions, "exported_at": self.exported_at}
        return {
            "format_version": self.format_version,
            "model": self._model_dict(),
            "function": {"input": _tensor_dict(self.input), "output": _tensor_dict(self.output),
                         "contains": self.contains},
            "weights": dataclasses.asdict(self.weights),
            "artifacts": [{**dataclasses.asdict(a), "platforms": list(a.platforms), "backends": list(a.backends),
                           "files": list(a.files)} for a in self.artifacts],
            "files": {rel: dataclasses.asdict(entry) for rel, entry in self.files.items()},
            "versions": self.versions,
            "exported_at": self.exported_at,
            "self_check": None if self.self_check is None else dataclasses.asdict(self.self_check),
        }

    def _model_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self.model), "bundles": list(self.model.bundles)}

    def write(self) -> Path:
        path = self.root / MANIFEST_NAME
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    def artifact(self, artifact_id: str) -> Artifact:
        for a in self.artifacts:
            if a.id == artifact_id:
                return a
        raise ArtifactError(f"{self.root / MANIFEST_NAME}: no artifact {artifact_id!r} "
                            f"(bundle has: {', '.join(a.id for a in self.artifacts)})")

    def find(self, backend: str, platform: str, cpu_flags: frozenset[str] | None = None,
             precision: str = "fp32", dropout: bool = False) -> Artifact | None:
        """The first artifact for backend, platform and precision whose required CPU flags this machine has
        (``dropout``: the dropout model of ``--uncertainty`` instead of the plain one)."""
        flags = host_cpu_flags() if cpu_flags is None else cpu_flags
        for a in self.artifacts:
            needs = set(a.details.get("requires_cpu_flags", ())) if platform == "cpu" else set()
            if (backend in a.backends and platform in a.platforms and a.precision == precision and needs <= flags
                    and a.is_dropout == dropout):
                return a
        return None

    @property
    def plain_artifacts(self) -> tuple[Artifact, ...]:
        """The plain model's artifacts (slices -> probabilities): all but ``--uncertainty``'s dropout model."""
        return tuple(a for a in self.artifacts if not a.is_dropout)

    @property
    def precisions(self) -> tuple[str, ...]:
        return tuple(p for p in PRECISIONS if any(a.precision == p for a in self.artifacts))

    def verify_file(self, rel: str) -> str:
        """Check size and sha256 of one listed file; returns its sha256."""
        entry, path = self.files[rel], self.root / rel  # presence checked by load_manifest
        if not path.is_file():
            raise ArtifactError(f"{path}: artifact file missing (bundle {self.root})")
        if path.stat().st_size != entry.size:
            raise ArtifactError(f"{path}: size {path.stat().st_size} != {entry.size} in the manifest "
                                "(tampered or truncated artifact)")
        digest = sha256_of(path)
        if digest != entry.sha256:
            raise ArtifactError(f"{path}: sha256 {digest[:12]}... != {entry.sha256[:12]}... in the manifest "
                                "(tampered artifact)")
        return digest

    def verify_files(self, artifact: Artifact) -> dict[str, str]:
        """Check size and sha256 of every file of an artifact; returns {file: sha256}."""
        return {rel: self.verify_file(rel) for rel in artifact.files}

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


def _from_fields(root: Path, fields: dict[str, Any]) -> Manifest:
    return Manifest(
        root=root, format_version=fields["format_version"],
        model=ModelInfo(**fields["model"]),
        input=TensorSpec(**fields["input"]), output=TensorSpec(**fields["output"]), contains=fields["contains"],
        weights=WeightsInfo(**fields["weights"]),
        artifacts=tuple(Artifact(**a) for a in fields["artifacts"]),
        files={rel: FileEntry(**entry) for rel, entry in fields["files"].items()},
        versions=fields["versions"], exported_at=fields["exported_at"],
        self_check=None if fields["self_check"] is None else SelfCheck(**fields["self_check"]),
        parts=tuple(_from_fields(root, part) for part in fields["parts"]))


def _tensor_dict(spec: TensorSpec) -> dict[str, Any]:
    return {**dataclasses.asdict(spec), "shape": list(spec.shape)}


def host_cpu_flags() -> frozenset[str]:
    """CPU feature flags of this machine (Linux /proc/cpuinfo; empty where unreadable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def load_manifest(bundle_dir: str | Path) -> Manifest:
    """Read and validate a bundle's manifest.json: every field's type and range, every referenced file present
    inside the bundle with its recorded size (checksums are verified per artifact when it is loaded)."""
    root = Path(bundle_dir)
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"{path}: no manifest (build a bundle with `python -m export ... --out {root}`)")
    try:
        raw = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ArtifactError(f"{path}: not valid JSON ({' '.join(str(e).split())[:120]})") from None
    except OSError as e:
        raise ArtifactError(f"{path}: cannot be read ({e.strerror or e})") from None
    manifest = _from_fields(root, parse_manifest(raw, path, FORMAT_VERSION, PEAK_CHANNELS))
    for rel, entry in manifest.files.items():
        file = root / rel
        if not file.is_file():
            raise ArtifactError(f"{file}: listed in {path} but missing (incomplete bundle)")
        if file.stat().st_size != entry.size:
            raise ArtifactError(f"{file}: size {file.stat().st_size} != {entry.size} in {path} "
                                "(tampered or truncated artifact)")
    return manifest
