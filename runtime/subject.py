"""One subject, all or nothing: the run that the command line (``runtime.run``), the study runner
(``runtime.cohort``), ``Segmentation.save`` and the benchmarks share.

    check_subject(peaks, outdir, options, manifest)   # every check, cheap ones first; reads the input
    options.open_pipeline()                           # only then: sha256 of the artifact, load, self-check
    run_subject(pipeline, checked, options)           # lock outdir, predict, stage, commit -> RunReport

Each check runs once: :func:`check_subject` checks the outputs' locations, the extras that are asked for, the
input (every check of :mod:`runtime.checks.input_checks`) and the cube's aspect; :func:`run_subject` trusts a
:class:`CheckedSubject` and goes straight to the network.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.checks.input_checks import check_cube_aspect
from runtime.checks.preflight import check_outputs
from runtime.errors import InputError
from runtime.io.geometry import crop_to_nonzero, flip, mni_flip_axes
from runtime.io.nifti_io import check_input_file, output_bytes, output_dtype, strip_nifti
from runtime.models.manifest import Manifest
from runtime.options import STATISTICS_FILE, RunOptions
from runtime.outputs.output_set import StagedOutputs, output_folder
from runtime.outputs.segmentation import Segmentation
from runtime.qc.collectors import BundleHooks, first_peak_length, preview_dependency_check
from runtime.qc.report import package_versions, peak_rss_mb

if TYPE_CHECKING:
    from runtime.pipeline import PeaksInput, ReadPeaks, TractSegPipeline

PROG = "tractseg-aot"
EXTRAS_BYTES = 2 << 20  # statistics.json and preview.png: well under 2 MB
log = logging.getLogger("tractseg_aot")


@dataclass
class CheckedSubject:
    """An input read and checked, with the output folder it goes to (checked too) and the report's path.
    :func:`run_subject` takes the input out (:meth:`take_peaks`) so that it is freed once the cube is made."""

    peaks: ReadPeaks | None
    outdir: Path
    files: tuple[Path, ...]
    report: Path | None = None
    read_seconds: float = 0.0
    masks: Path | None = None  # TOM: the bundle segmentations folder, checked
    carried: tuple[tuple[Path, Path], ...] = ()  # (final path, where it is now): committed with the outputs

    def take_peaks(self) -> ReadPeaks:
        """The input, handed over: this record no longer holds it, so the pipeline frees it as soon as the
        network's cube is made (HCP size: 131 MB of float32 peaks not resident during the network)."""
        peaks, self.peaks = self.peaks, None
        if peaks is None:
            raise RuntimeError("this subject's input was already handed to a run")
        return peaks


@dataclass(frozen=True)
class RunReport:
    """What one subject's run did: the files it wrote, seconds per stage, slices run, the process's peak RSS,
    and the whole JSON record (``--report``, the study runner's done-record)."""

    outputs: tuple[Path, ...]
    timings_s: dict[str, float]
    slices_run: int | None
    peak_rss_mb: float
    document: dict[str, Any]


def subject_name(source: str | os.PathLike[str]) -> str:
    """A name for a subject from its input: the file name without .nii.gz (pictures, statistics)."""
    return strip_nifti(Path(source).name)


def check_input_path(peaks: PeaksInput) -> None:
    """A path input is a readable, non-empty file (before anything else, so a misspelled path is named as such
    rather than reported as a missing bundle)."""
    if isinstance(peaks, (str, os.PathLike)):
        if not str(peaks):
            raise InputError("peaks: empty path")
        check_input_file(Path(peaks))


def check_subject(peaks: PeaksInput | ReadPeaks, outdir: str | os.PathLike[str], options: RunOptions,
                  manifest: Manifest, report: str | os.PathLike[str] | None = None) -> CheckedSubject:
    """Every check a subject's run makes, before a backend is opened: the outputs' locations (none exists
    unless ``options.force``; neither the input nor the report is an output), the extras asked for (Pillow for
    the preview), the input read with all its checks, and the cube's aspect. Raises TractSegError."""
    from runtime.pipeline import ReadPeaks, largest_part, read_peaks

    root = Path(outdir)
    report_path = Path(report) if report is not None else None
    files = options.output_files(root)
    source = [Path(peaks.source if isinstance(peaks, ReadPeaks) else peaks)] if isinstance(
        peaks, (ReadPeaks, str, os.PathLike)) else []
    check_outputs(files, options.force, report_path, inputs=source)
    preview_dependency_check(options.preview)
    started = time.perf_counter()
    given = read_peaks(peaks, manifest.slice_size, largest_part(options.model).n_classes)
    read_seconds = round(time.perf_counter() - started, 3)
    _, bbox = crop_to_nonzero(flip(given.data, mni_flip_axes(given.affine)))
    check_cube_aspect(given.source, tuple(b - a for a, b in bbox))
    masks = None
    if options.model.task == "TOM":
        from runtime.tom import check_masks, default_masks_dir

        masks = check_masks(options.tract_segmentations_path or default_masks_dir(root), options.model.bundles,
                            given.data.shape[:3], given.affine)
    return CheckedSubject(given, root, tuple(files), report_path, read_seconds, masks)


class Progress:
    """tqdm bars on stderr, or nothing when quiet."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    @contextmanager
    def bar(self, total: int, unit: str, description: str | None = None) -> Iterator[Callable[[int], None]]:
        if self.quiet:
            yield lambda n: None
            return
        from tqdm import tqdm

        with tqdm(total=total, unit=unit, desc=description, file=sys.stderr, dynamic_ncols=True, leave=True) as bar:
            yield bar.update


def write_segmentation(segmentation: Segmentation, staged: StagedOutputs, options: RunOptions, subject: str,
                       background: Any = None, progress: Progress | None = None) -> tuple[list[Path], dict[str, float]]:
    """Write ``segmentation``'s outputs (upstream's layout, then statistics.json / preview.png as asked) into
    ``staged``; returns the final paths and the seconds spent. The one writer of every caller."""
    t0 = time.perf_counter()
    save = options.save
    hooks = BundleHooks(segmentation, background, options.statistics, save.probabilities, subject,
                        segmentation.model or segmentation.output_type)
    with (progress or Progress(True)).bar(len(segmentation.bundles), "bundle") as advance:
        def on_bundle(index: int, name: str, volume) -> None:
            hooks.add(index, name, volume)
            advance(1)

        written = segmentation.write_into(staged, save, on_bundle)
        written += hooks.finish(staged)
    timings = {"postprocess_write": round(time.perf_counter() - t0, 3)}
    if hooks.stats is not None or hooks.canvas is not None:
        timings["of_which_statistics_preview"] = round(hooks.seconds, 3)
    return written, timings


def needed_bytes(options: RunOptions, shape: tuple[int, ...]) -> int:
    model = options.model
    return output_bytes(model.task, model.n_classes, shape, options.get_probabilities, options.postprocess) \
        + EXTRAS_BYTES


def save_segmentation(segmentation: Segmentation, outdir: str | os.PathLike[str], options: RunOptions,
                      subject: str | None = None) -> list[Path]:
    """Write a prediction's outputs under ``outdir`` all or nothing (``Segmentation.save``; no preview: that
    needs the input's peaks, see ``TractSegPipeline.segment``)."""
    if options.preview:
        raise ValueError("save_segmentation: a preview needs the input's peaks; use TractSegPipeline.segment")
    root = Path(outdir)
    save = options.save
    files = segmentation.files(root, save) + ([root / STATISTICS_FILE] if options.statistics else [])
    other = segmentation.files(root, dataclasses.replace(save, single_file=not save.single_file))
    check_outputs(files, options.force)
    with output_folder(root, files, options.force, segmentation.needed_bytes(save) + EXTRAS_BYTES, other) as staged:
        written, _ = write_segmentation(segmentation, staged, options, subject or subject_name(segmentation.source))
    return written


def run_subject(pipeline: TractSegPipeline, checked: CheckedSubject, options: RunOptions,
                subject: str | None = None) -> RunReport:
    """Lock the output folder, predict, stage every output and commit them together (or nothing). Raises
    TractSegError for anything the user can fix."""
    started = time.perf_counter()
    assert checked.peaks is not None, "run_subject: this subject's input was already handed to a run"
    name = subject or subject_name(checked.peaks.source)
    progress = Progress(options.quiet)
    background = first_peak_length(checked.peaks.data) if options.preview else None
    shape = checked.peaks.data.shape[:3]
    with output_folder(checked.outdir, list(checked.files), options.force, needed_bytes(options, shape),
                       options.other_layout_files(checked.outdir)) as staged:
        with progress.bar(pipeline.slices_per_subject, "slice", "network") as advance:
            # handed over, no reference kept here: predict frees the input once the cube is made
            segmentation = pipeline.predict(checked.take_peaks(), advance, checked.masks)
            if checked.masks is not None:  # TOM: the parts run while the bundles are written
                written, write_timings = write_segmentation(segmentation, staged, options, name, None, None)
        if checked.masks is None:
            written, write_timings = write_segmentation(segmentation, staged, options, name, background, progress)
        for final, current in checked.carried:  # a raw input's peaks (runtime.raw_input): committed with the rest
            shutil.move(current, staged.path(final.relative_to(checked.outdir)))
            written.append(final)
    timings = {**segmentation.timings, "load": checked.read_seconds, **write_timings,
               "total": round(time.perf_counter() - started + checked.read_seconds, 3)}
    stats = segmentation.slices
    log.info("wrote %d file(s) under %s (%d slices run, %d empty slices skipped)", len(written), checked.outdir,
             stats.run if stats else 0, stats.skipped if stats else 0)
    p = segmentation.placement
    rss = peak_rss_mb()
    document = {
        "tool": PROG, "versions": package_versions(),
        "input": {"path": str(Path(segmentation.source).resolve()), "shape": [*p.shape, 9],
                  "affine": p.affine.tolist(), "flip_axes": list(p.flip_axes), "bbox": [list(b) for b in p.bbox],
                  "cube_size": pipeline.manifest.slice_size},
        "request": {**options.output_record(), "force": options.force},
        **pipeline.record(),
        "slices": stats.as_dict() if stats else None,
        "timings_s": {"open_backend": pipeline.open_seconds, **timings},
        "peak_rss_mb": rss,
        "output_dtype": str(output_dtype(pipeline.model.task, options.get_probabilities, options.postprocess)),
        "outputs": [str(f) for f in written],
    }
    return RunReport(tuple(written), document["timings_s"], stats.run if stats else None, rss, document)
