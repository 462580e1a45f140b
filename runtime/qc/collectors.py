"""The per-bundle collectors of ``--statistics`` (:mod:`runtime.qc.statistics`) and ``--preview``
(:mod:`runtime.qc.preview`), fed with each bundle's volume as it is written, so neither recomputes a mask."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from runtime.io.nifti_io import PREVIEW_FILE, STATISTICS_FILE

class Segmentation(Protocol):
    """What the collectors read of a prediction (:class:`runtime.outputs.segmentation.Segmentation`, handed in by
    the writer, :mod:`runtime.outputs.save`; a protocol, so this layer imports nothing above it)."""

    affine: np.ndarray
    bundles: tuple[str, ...]
    source: str

    def probability(self, name: str) -> np.ndarray: ...


@dataclass(frozen=True)
class RunNotes:
    """What the statistics' ``_meta`` and the preview's title also say about a run: demo weights, the orientation
    check's verdict (:mod:`runtime.runner.orientation`)."""

    demo_weights: bool = False
    orientation: dict[str, Any] | None = None

    def meta(self) -> dict[str, Any]:
        orientation = {k: v for k, v in (self.orientation or {}).items() if k != "seconds"}  # the same every run
        return {**({"demo_weights": True} if self.demo_weights else {}),
                **({"orientation": orientation} if self.orientation is not None else {})}

    def title(self) -> list[str]:
        o = self.orientation or {}
        flipped = o.get("confident") and o.get("flip") not in (None, "none")
        return [*(["DEMO WEIGHTS: not anatomy"] if self.demo_weights else []),
                *([f"peaks' {o['flip']} axis looks flipped" + (" (fixed)" if o.get("applied") else "")]
                  if flipped else [])]


class BundleHooks:
    """Statistics and preview collected bundle by bundle; :meth:`finish` writes them into the staging folder."""

    def __init__(self, segmentation: Segmentation, background: np.ndarray | None, statistics: bool,
                 probabilities: bool, subject: str, model: str, notes: RunNotes | None = None):
        from runtime.qc import statistics as stats

        notes = notes or RunNotes()
        self.segmentation, self.probabilities = segmentation, probabilities
        self.seconds = 0.0  # time spent on statistics and preview (reported: their cost)
        self.stats = None
        if statistics:
            meta = {"subject": subject, "model": model, "source": segmentation.source, **notes.meta()}
            self.stats = stats.StatisticsAccumulator(
                segmentation.affine, stats.probabilities_meta(**meta) if probabilities else stats.masks_meta(**meta))
        self.canvas = None
        if background is not None:
            from runtime.qc.preview import PreviewCanvas

            self.canvas = PreviewCanvas(background, segmentation.affine, segmentation.bundles,
                                        "  |  ".join([subject, model, *notes.title()]))

    def add(self, index: int, name: str, volume: np.ndarray) -> None:
        started = time.perf_counter()
        self._add(index, name, volume)
        self.seconds += time.perf_counter() - started

    def _add(self, index: int, name: str, volume: np.ndarray) -> None:
        if self.stats is not None:
            if self.probabilities:
                self.stats.add_probability(name, volume)
            else:
                self.stats.add(name, volume, self.segmentation.probability(name))
        if self.canvas is not None:
            self.canvas.add_bundle(index, volume > 0.5 if self.probabilities else volume)

    def finish(self, staging: Path) -> list[str]:
        """Write statistics.json / preview.png into ``staging``; returns the names written."""
        started = time.perf_counter()
        written = []
        if self.stats is not None:
            self.stats.write(staging / STATISTICS_FILE)
            written.append(STATISTICS_FILE)
        if self.canvas is not None:
            self.canvas.save(staging / PREVIEW_FILE)
            written.append(PREVIEW_FILE)
        self.seconds += time.perf_counter() - started
        return written


def first_peak_length(data: np.ndarray) -> np.ndarray:
    """|first peak| per voxel, float32 (X, Y, Z): the preview's background."""
    return np.sqrt(np.einsum("...i,...i->...", data[..., :3], data[..., :3], dtype=np.float32))


def preview_dependency_check(preview: bool) -> None:
    """Fail before the network when --preview cannot be made (Pillow missing)."""
    if preview:
        from runtime.qc.preview import _pillow

        _pillow()
