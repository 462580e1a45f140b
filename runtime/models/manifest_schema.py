"""The manifest's schema, checked field by field: a manifest that is valid JSON but not a valid manifest (``null``,
``42``, the model a string, no artifacts, an artifact without id, slice size 0, a file path leaving the bundle)
is one :class:`ArtifactError` line naming the file and the field, never a ``TypeError`` or ``KeyError``.

:func:`parse_manifest` returns plain, type-checked values keyed like :class:`runtime.models.manifest.Manifest`'s fields;
the dataclasses are built from them there. Unknown keys are ignored (a newer exporter may add some).
"""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

from runtime.errors import ArtifactError

SHA256 = re.compile(r"[0-9a-f]{64}")
PLATFORMS = ("cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "int8", "fp16")
CONV_ALGORITHMS = ("direct", "winograd2", "winograd4")  # how an artifact computes each 3x3 convolution (issue 20)
SEED_SOURCE = re.compile(r"random \(seed (\d+), He-scaled\)")  # bundles written before "seed" was a field


class _Checker:
    def __init__(self, path: Path, prefix: str = ""):
        self.path, self.prefix = path, prefix

    def fail(self, where: str, what: str) -> ArtifactError:
        return ArtifactError(f"{self.path}: invalid manifest: {self.prefix}{where} {what}")

    def get(self, obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str,
            optional: bool = False, default: Any = None) -> Any:
        if key not in obj:
            if optional:
                return default
            raise self.fail(f"{where}.{key}", "is missing")
        value = obj[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if bool in kinds and isinstance(value, bool):
            return value
        if isinstance(value, bool) or not isinstance(value, kinds):
            names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
            raise self.fail(f"{where}.{key}", f"must be {names}, not {_json_type(value)}")
        return value

    def section(self, obj: dict[str, Any], key: str, where: str = "manifest", optional: bool = False) -> dict:
        return self.get(obj, key, dict, where, optional, {})

    def int_list(self, obj: dict[str, Any], key: str, where: str, length: int) -> tuple[int, ...]:
        values = self.get(obj, key, list, where)
        if len(values) != length or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
            raise self.fail(f"{where}.{key}", f"must be {length} positive integers, not {values!r:.80}")
        return tuple(values)

    def str_list(self, obj: dict[str, Any], key: str, where: str, allowed: tuple[str, ...] | None = None,
                 nonempty: bool = True) -> tuple[str, ...]:
        values = self.get(obj, key, list, where)
        if any(not isinstance(v, str) or not v for v in values) or (nonempty and not values):
            raise self.fail(f"{where}.{key}", "must be a list of non-empty strings")
        if allowed is not None and not set(values) <= set(allowed):
            raise self.fail(f"{where}.{key}", f"has {sorted(set(values) - set(allowed))}, allowed: {allowed}")
        return tuple(values)

    def relative(self, value: str, where: str) -> str:
        pure = PurePosixPath(value)
        if not value or pure.is_absolute() or ".." in pure.parts or "\\" in value or "\x00" in value:
            raise self.fail(where, f"{value!r:.80} is not a relative path inside the bundle")
        return value


def _json_type(value: Any) -> str:
    return {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _conv_algorithms(c: _Checker, entry: dict[str, Any], where: str) -> dict[str, str]:
    """{3x3 layer name: algorithm}; absent (bundles exported before it existed) means every layer direct."""
    found = c.get(entry, "conv_algorithms", dict, where, True, {})
    for layer, algorithm in found.items():
        if not layer or algorithm not in CONV_ALGORITHMS:
            raise c.fail(f"{where}.conv_algorithms[{layer!r:.40}]",
                         f"is {algorithm!r:.40}, allowed: {CONV_ALGORITHMS}")
    return dict(found)


def _model(c: _Checker, raw: dict[str, Any]) -> dict[str, Any]:
    """The model section; ``channels_per_bundle`` (TOM: 3), ``linear`` and ``part`` are absent in bundles
    exported before TOM / dm_regression existed (1, false, "")."""
    model = c.section(raw, "model")
    n_classes = c.get(model, "n_classes", int, "model")
    bundles = c.str_list(model, "bundles", "model")
    per_bundle = c.get(model, "channels_per_bundle", int, "model", True, 1)
    if n_classes < 1 or per_bundle < 1:
        raise c.fail("model.n_classes", f"must be at least 1, not {n_classes} ({per_bundle} per bundle)")
    if len(bundles) * per_bundle != n_classes or len(set(bundles)) != len(bundles):
        raise c.fail("model.bundles", f"must be {n_classes // per_bundle} distinct names (got {len(bundles)})")
    return {"task": c.get(model, "task", str, "model"),
            "tract_definition": c.get(model, "tract_definition", str, "model"),
            "n_classes": n_classes, "bundles": bundles,
            "architecture": c.get(model, "architecture", str, "model", True, ""),
            "channels_per_bundle": per_bundle, "linear": c.get(model, "linear", bool, "model", True, False),
            "part": c.get(model, "part", str, "model", True, "")}


SHARED = ("format_version", "files", "versions", "exported_at")  # a part's keys taken from the whole manifest


def parse_manifest(raw: Any, path: Path, format_version: int, channels: int, prefix: str = "") -> dict[str, Any]:
    """Validated fields of a manifest document (see module docstring); raises ArtifactError.

    A bundle of several part models (TOM) has ``parts``: a list of entries with their own ``model``,
    ``function``, ``weights``, ``artifacts`` and ``self_check``, sharing the whole document's ``files``; each is
    checked like a one-model manifest and returned under ``parts``; the whole has no ``function`` or
    ``artifacts`` of its own (its input / output fields are the first part's)."""
    c = _Checker(path, prefix)
    if not isinstance(raw, dict):
        raise ArtifactError(f"{path}: invalid manifest: must be a JSON object, not {_json_type(raw)}")
    version = c.get(raw, "format_version", int, "manifest")
    if version != format_version:
        raise c.fail("format_version", f"is {version}, this runtime reads {format_version}")
    if "parts" in raw and not prefix:
        return _parse_parts(c, raw, path, format_version, channels)

    model_fields = _model(c, raw)  # the sections in document order, so the first problem is the one named
    function = c.section(raw, "function")
    tensors = _tensors(c, function, channels, model_fields["n_classes"])
    weights = _weights(c, raw)
    files = _files(c, raw)
    artifacts = _artifacts(c, raw, files)
    self_check = _self_check(c, raw, files)
    versions = c.section(raw, "versions")
    return {"parts": (), "self_check": self_check, "format_version": version, "model": model_fields,
            "input": tensors["input"], "output": tensors["output"],
            "contains": c.section(function, "contains", "function", optional=True), "weights": weights,
            "artifacts": artifacts, "files": files, "versions": {str(k): str(v) for k, v in versions.items()},
            "exported_at": c.get(raw, "exported_at", str, "manifest")}


def _tensors(c: _Checker, function: dict[str, Any], channels: int, n_classes: int) -> dict[str, dict[str, Any]]:
    """``function.input`` / ``function.output``: float32 (batch, channels, S, S) -> (batch, n_classes, S, S)."""
    tensors = {}
    for key in ("input", "output"):
        spec = c.section(function, key, "function")
        tensors[key] = {"name": c.get(spec, "name", str, f"function.{key}"),
                        "shape": c.int_list(spec, "shape", f"function.{key}", 4),
                        "dtype": c.get(spec, "dtype", str, f"function.{key}"),
                        "layout": c.get(spec, "layout", str, f"function.{key}", True, "")}
        if tensors[key]["dtype"] != "float32":
            raise c.fail(f"function.{key}.dtype", f"is {tensors[key]['dtype']!r}, the runtime feeds float32")
    batch, in_channels, size, size2 = tensors["input"]["shape"]
    if in_channels != channels or size != size2 or size % 16:
        raise c.fail("function.input.shape", f"{list(tensors['input']['shape'])} is not (batch, {channels}, S, S) "
                     "with S a multiple of 16")
    if tensors["output"]["shape"] != (batch, n_classes, size, size):
        raise c.fail("function.output.shape", f"{list(tensors['output']['shape'])} is not "
                     f"[{batch}, {n_classes}, {size}, {size}]")
    return tensors


def _weights(c: _Checker, raw: dict[str, Any]) -> dict[str, Any]:
    """``weights``: where they came from (a demo seed is read from the source when not given)."""
    weights = c.section(raw, "weights")
    source = c.get(weights, "source", str, "weights")
    seed = c.get(weights, "seed", (int, type(None)), "weights", True)
    if seed is None and (match := SEED_SOURCE.fullmatch(source)):
        seed = int(match.group(1))
    return {"source": source, "sha256": c.get(weights, "sha256", (str, type(None)), "weights"),
            "demo": c.get(weights, "demo", bool, "weights"), "seed": seed,
            "note": c.get(weights, "note", str, "weights", True, "")}


def _files(c: _Checker, raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``files``: every file of the bundle, a relative path inside it with its size and sha256."""
    files = {}
    for rel, entry in c.section(raw, "files").items():
        where = f"files[{rel!r:.60}]"
        c.relative(rel, where)
        if not isinstance(entry, dict):
            raise c.fail(where, f"must be an object, not {_json_type(entry)}")
        size_bytes, digest = c.get(entry, "size", int, where), c.get(entry, "sha256", str, where)
        if size_bytes < 0 or not SHA256.fullmatch(digest):
            raise c.fail(where, "needs a size >= 0 and a 64-digit lowercase hex sha256")
        files[rel] = {"size": size_bytes, "sha256": digest}
    return files


def _artifacts(c: _Checker, raw: dict[str, Any], files: dict[str, Any]) -> list[dict[str, Any]]:
    """``artifacts``: at least one, unique ids, known platforms and precisions, every file listed in ``files``."""
    artifacts, ids = [], set()
    entries = c.get(raw, "artifacts", list, "manifest")
    if not entries:
        raise c.fail("artifacts", "is empty (nothing to run)")
    for index, entry in enumerate(entries):
        where = f"artifacts[{index}]"
        if not isinstance(entry, dict):
            raise c.fail(where, f"must be an object, not {_json_type(entry)}")
        artifact = {"id": c.get(entry, "id", str, where), "format": c.get(entry, "format", str, where),
                    "path": c.relative(c.get(entry, "path", str, where), f"{where}.path"),
                    "platforms": c.str_list(entry, "platforms", where, PLATFORMS),
                    "backends": c.str_list(entry, "backends", where, nonempty=False),
                    "files": c.str_list(entry, "files", where),
                    "drift": c.section(entry, "drift", where, optional=True),
                    "details": c.section(entry, "details", where, optional=True),
                    "precision": c.get(entry, "precision", str, where, True, "fp32")}
        artifact["conv_algorithms"] = _conv_algorithms(c, entry, where)
        if artifact["precision"] not in PRECISIONS:
            raise c.fail(f"{where}.precision", f"is {artifact['precision']!r:.40}, allowed: {PRECISIONS}")
        if "requires_cpu_flags" in artifact["details"]:
            c.str_list(artifact["details"], "requires_cpu_flags", f"{where}.details", nonempty=False)
        if not artifact["id"] or artifact["id"] in ids:
            raise c.fail(f"{where}.id", f"{artifact['id']!r} is empty or repeated")
        ids.add(artifact["id"])
        unlisted = [f for f in artifact["files"] if f not in files]
        if unlisted:
            raise c.fail(f"{where}.files", f"{unlisted[0]!r} has no entry (size, sha256) under files")
        artifacts.append(artifact)
    return artifacts


def _self_check(c: _Checker, raw: dict[str, Any], files: dict[str, Any]) -> dict[str, Any] | None:
    """``self_check`` (optional): the check batch file, listed under ``files``, and its stride."""
    if raw.get("self_check") is None:
        return None
    section = c.section(raw, "self_check")
    self_check = {"path": c.relative(c.get(section, "path", str, "self_check"), "self_check.path"),
                  "stride": c.get(section, "stride", int, "self_check"),
                  "source": c.get(section, "source", str, "self_check", True, "")}
    if self_check["path"] not in files or self_check["stride"] < 1:
        raise c.fail("self_check", "needs a path listed under files and a stride >= 1")
    return self_check


def _parse_parts(c: _Checker, raw: dict[str, Any], path: Path, format_version: int,
                 channels: int) -> dict[str, Any]:
    entries = c.get(raw, "parts", list, "manifest")
    if not entries:
        raise c.fail("parts", "is empty (nothing to run)")
    parts = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise c.fail(f"parts[{index}]", f"must be an object, not {_json_type(entry)}")
        parts.append(parse_manifest({**entry, **{k: raw[k] for k in SHARED if k in raw}}, path, format_version,
                                    channels, prefix=f"parts[{index}]."))
    model = _model(c, raw)
    names = tuple(b for part in parts for b in part["model"]["bundles"])
    if names != model["bundles"]:
        raise c.fail("parts", "bundles, in order, are not the whole model's bundles")
    if len({part["input"]["shape"] for part in parts}) != 1:
        raise c.fail("parts", "have different input shapes")
    first = parts[0]
    weights = c.section(raw, "weights")
    return {**first, "model": model, "artifacts": [], "self_check": None, "parts": tuple(parts),
            "weights": {"source": c.get(weights, "source", str, "weights"),
                        "sha256": c.get(weights, "sha256", (str, type(None)), "weights"),
                        "demo": c.get(weights, "demo", bool, "weights"),
                        "seed": c.get(weights, "seed", (int, type(None)), "weights", True),
                        "note": c.get(weights, "note", str, "weights", True, "")}}
