"""The one writer of a prediction's outputs: upstream's layout, then statistics.json / preview.png as asked, into
a staged output folder (:mod:`runtime.outputs.output_set`), committed all or nothing by the caller. The subject
runner (:mod:`runtime.runner`) and :meth:`runtime.outputs.segmentation.Segmentation.save` both write through it."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Protocol

from runtime.checks.preflight import check_outputs
from runtime.io.nifti_io import STATISTICS_FILE
from runtime.io.peaks_input import subject_name
from runtime.io.progress import Progress
from runtime.options import QCOptions, SaveOptions
from runtime.outputs.output_set import StagedOutputs, output_folder
from runtime.qc.collectors import BundleHooks, RunNotes


class Result(Protocol):
    """What the writer needs of a prediction: :class:`runtime.outputs.segmentation.Segmentation` or
    :class:`runtime.tom.TOMResult` (a protocol: both import this module, not the other way round)."""

    bundles: tuple[str, ...]
    model: str
    output_type: str
    source: str
    affine: Any

    def write_into(self, staged: StagedOutputs, options: SaveOptions, on_bundle: Any = None) -> list[Path]: ...

    def files(self, outdir: str | os.PathLike[str], options: SaveOptions = ...) -> list[Path]: ...

    def needed_bytes(self, options: SaveOptions) -> int: ...

    def probability(self, name: str) -> Any: ...

EXTRAS_BYTES = 2 << 20  # statistics.json and preview.png: well under 2 MB


def write_result(result: Result, staged: StagedOutputs, save: SaveOptions, qc: QCOptions,
                 subject: str, background: Any = None, progress: Progress | None = None,
                 notes: RunNotes | None = None) -> tuple[list[Path], dict[str, float]]:
    """Write ``result``'s outputs into ``staged``; returns the final paths and the seconds spent.
    ``background``: the preview's background (|first peak|), when a preview is asked for; ``notes``: what
    statistics.json's ``_meta`` and the preview's title also say (demo weights, the orientation check)."""
    t0 = time.perf_counter()
    hooks = BundleHooks(result, background, qc.statistics, save.probabilities, subject,
                        result.model or result.output_type, notes)
    with (progress or Progress(True)).bar(len(result.bundles), "bundle") as advance:
        def on_bundle(index: int, name: str, volume) -> None:
            hooks.add(index, name, volume)
            advance(1)

        written = result.write_into(staged, save, on_bundle)
        written += [staged.outdir / name for name in hooks.finish(staged.staging)]
    timings = {"postprocess_write": round(time.perf_counter() - t0, 3)}
    if hooks.stats is not None or hooks.canvas is not None:
        timings["of_which_statistics_preview"] = round(hooks.seconds, 3)
    return written, timings


def save_segmentation(segmentation: Result, outdir: str | os.PathLike[str], save: SaveOptions,
                      statistics: bool = False, force: bool = False, subject: str | None = None) -> list[Path]:
    """Write a prediction's outputs under ``outdir`` all or nothing (``Segmentation.save``; no preview: that needs
    the input's peaks, see ``TractSegPipeline.segment``); returns the files."""
    root = Path(outdir)
    files = segmentation.files(root, save) + ([root / STATISTICS_FILE] if statistics else [])
    other = segmentation.files(root, save.replace(single_file=not save.single_file))
    hint = "pass force=True"  # a Python caller: no command-line flag to name
    check_outputs(files, force, force_hint=hint)
    with output_folder(root, files, force, segmentation.needed_bytes(save) + EXTRAS_BYTES, other, hint) as staged:
        written, _ = write_result(segmentation, staged, save, QCOptions(statistics=statistics),
                                  subject or subject_name(segmentation.source))
    return written
