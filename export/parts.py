"""A bundle of several part models (TOM: upstream's four peak-regression models, All_Part1..All_Part4).

Each part is built, verified and checksummed by :func:`export.bundle.build_bundle` into ``<out>.partial/partN``;
their manifests are then merged into the one typed manifest of the whole (``Manifest.parts``, artifact paths
prefixed with ``partN/``) and the folder is renamed into place only when every part passed.
"""
from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from export.bundle import ExportRequest, build_bundle, partial_folder
from export.manifest_writer import file_entries, package_versions
from export.model import TractSeg
from runtime.models.bundles import Model
from runtime.models.manifest import MANIFEST_NAME, Manifest, ModelInfo, WeightsInfo, load_manifest


def build_parts_bundle(networks: Sequence[Callable[[], TractSeg]], request: ExportRequest,
                       weights: Sequence[WeightsInfo], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Export every part of ``request.model`` (``networks[i]()`` builds part i's live model, so only one is in
    memory at a time) into one bundle; returns a summary per part."""
    model = request.model
    if len(networks) != len(model.parts) or len(weights) != len(model.parts):
        raise ValueError(f"{model.name} has {len(model.parts)} parts, got {len(networks)} networks")
    if request.precisions != ("fp32",):
        raise ValueError(f"{model.name}: only fp32 is exported for part models "
                         f"(asked: {', '.join(request.precisions)})")
    work = partial_folder(request.out, request.force)
    try:
        summaries = {}
        parts = []
        for index, (part, make, info) in enumerate(zip(model.parts, networks, weights)):
            folder = f"part{index + 1}"
            log(f"[export] {part.name} ({len(part.bundles)} bundles) -> {folder}/")
            summaries[part.name] = build_bundle(make(), dataclasses.replace(request, model=part, out=work / folder,
                                                                            force=False), info, log)
            parts.append(_prefixed(load_manifest(work / folder), folder, work))
            (work / folder / MANIFEST_NAME).unlink()
        _whole(work, model, parts, weights).write()
        load_manifest(work)  # the merged manifest reads back
        if request.out.exists():
            shutil.rmtree(request.out)
        work.rename(request.out)
        log(f"[export] bundle {request.out} written ({len(parts)} parts)")
        return {"out": str(request.out), "parts": summaries}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _prefixed(part: Manifest, folder: str, root: Path) -> Manifest:
    """A part's manifest with every path relative to the whole bundle."""
    def moved(rel: str) -> str:
        return f"{folder}/{rel}"

    artifacts = tuple(dataclasses.replace(a, path=moved(a.path), files=tuple(moved(f) for f in a.files))
                      for a in part.artifacts)
    check = part.self_check and dataclasses.replace(part.self_check, path=moved(part.self_check.path))
    return dataclasses.replace(part, root=root, artifacts=artifacts, self_check=check,
                               files={moved(rel): entry for rel, entry in part.files.items()})


def _whole(work: Path, model: Model, parts: list[Manifest], weights: Sequence[WeightsInfo]) -> Manifest:
    first = parts[0]
    demo = any(w.demo for w in weights)
    summary = WeightsInfo(source="; ".join(f"{p.model.part}: {w.source}" for p, w in zip(parts, weights)),
                          sha256=None, demo=demo, seed=weights[0].seed if demo else None,
                          note=weights[0].note if demo else "per part: see parts[i].weights")
    return dataclasses.replace(
        first, root=work, parts=tuple(parts), artifacts=(), self_check=None, weights=summary,
        model=ModelInfo(task=model.task, tract_definition=model.tract_definition, n_classes=model.n_classes,
                        bundles=model.bundles, channels_per_bundle=model.channels_per_bundle, linear=model.linear),
        files=file_entries(work, [rel for p in parts for rel in p.files]), versions=package_versions())
