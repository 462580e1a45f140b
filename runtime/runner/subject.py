"""One subject, all or nothing: the run that the command line (``runtime.run``), the study runner
(``runtime.cohort``), the chain (``runtime.chain``) and the API (``TractSegPipeline.segment``) share.

    segment_subject(input, outdir, options, open_pipeline)   # the whole run, peaks or raw DWI input:
        check_input_path -> the bundle's manifest -> check_destination -> [raw DWI: its peaks] -> read_subject
        -> open_pipeline() (only now: sha256 of the artifact, load, self-check) -> run_subject
    run_subject(pipeline, checked, options)                  # lock outdir, predict, stage, commit -> RunReport

The pipeline is handed in (``open_pipeline()`` is called once every check has passed): this module never imports
it, so data flows one way (options -> runner -> pipeline -> network) and the pipeline's ``segment`` can call
down into it. Each check runs once (:mod:`runtime.runner.checks`).
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from runtime.checks.preflight import find_manifest
from runtime.host import peak_rss_mb
from runtime.io.peaks_input import PeaksInput, ReadPeaks, check_input_path, subject_name
from runtime.io.nifti_io import output_bytes
from runtime.io.progress import Progress
from runtime.models.manifest import Manifest
from runtime.options import InferenceOptions, RunOptions
from runtime.outputs.output_set import output_folder
from runtime.outputs.save import EXTRAS_BYTES, write_result
from runtime.qc.collectors import RunNotes, first_peak_length
from runtime.runner.checks import CheckedSubject, check_destination, read_subject
from runtime.runner.preprocess import back_to_subject
from runtime.runner.raw_input import peaks_from_raw
from runtime.runner.report import RunReport, run_document

log = logging.getLogger("tractseg_aot")


class Pipeline(Protocol):
    """What the runner uses of the pipeline it is handed (:class:`runtime.pipeline.TractSegPipeline`; a protocol:
    this module never imports the pipeline)."""

    manifest: Manifest
    open_seconds: float

    def slices_for(self, bundles: tuple[str, ...] | None = None, single_orientation: bool = False) -> int: ...

    def predict(self, peaks: ReadPeaks, progress: Callable[[int], None] | None = None, masks: Path | None = None,
                bundles: tuple[str, ...] | None = None, inference: InferenceOptions = ...) -> Any: ...

    def record(self) -> dict[str, Any]: ...


def segment_subject(source: PeaksInput | ReadPeaks, outdir: str | os.PathLike[str], options: RunOptions,
                    open_pipeline: Callable[[], Pipeline], manifest: Manifest | None = None,
                    report: str | os.PathLike[str] | None = None, subject: str | None = None) -> RunReport:
    """One subject from its input (peaks, or a DWI series when ``options.raw`` is set) to committed outputs under
    ``outdir``; see the module docstring. ``manifest``: the bundle's, when the caller has it open already.
    Raises TractSegError for anything the user can fix, before any output exists."""
    check_input_path(source)
    root, report_path = Path(outdir), Path(report) if report is not None else None
    manifest = manifest or find_manifest(options.artifacts, options.model)
    files = check_destination(source, root, options, report_path)
    if options.raw is None:
        checked = read_subject(source, root, files, options, manifest, report_path)
        return run_subject(open_pipeline(), checked, options, subject)  # the pipeline only once all checks passed
    started = time.perf_counter()
    with peaks_from_raw(source, root, options.raw, options.backend.threads) as raw:
        peaks_seconds = round(time.perf_counter() - started, 3)
        checked = read_subject(raw.peaks, root, files, options, manifest, report_path, raw.carried)
        done = run_subject(open_pipeline(), checked, options, subject or subject_name(source))
    done.document["input"]["raw_diffusion_input"] = {"dwi": str(Path(source).resolve()), "peaks_engine": raw.engine,
                                                     **options.raw.record(), "peaks_timings_s": raw.timings}
    done.timings_s["peaks"] = peaks_seconds
    done.timings_s["total"] = round(done.timings_s["total"] + peaks_seconds, 3)
    return done


def needed_bytes(options: RunOptions, shape: tuple[int, ...]) -> int:
    model, save = options.model, options.written
    return output_bytes(model.task, model.n_classes, shape, save.probabilities, save.postprocess,
                        options.inference.single_orientation) + EXTRAS_BYTES


def run_subject(pipeline: Pipeline, checked: CheckedSubject, options: RunOptions,
                subject: str | None = None) -> RunReport:
    """Lock the output folder, predict, stage every output and commit them together (or nothing). Raises
    TractSegError for anything the user can fix."""
    started = time.perf_counter()
    assert checked.peaks is not None, "run_subject: this subject's input was already handed to a run"
    name = subject or subject_name(checked.peaks.source)
    progress = Progress(options.quiet)
    background = first_peak_length(checked.peaks.data) if options.qc.preview else None
    shape = checked.peaks.data.shape[:3]
    notes = RunNotes(pipeline.manifest.demo_weights, checked.orientation)
    with output_folder(checked.outdir, list(checked.files), options.force, needed_bytes(options, shape),
                       options.other_layout_files(checked.outdir)) as staged:
        slices = pipeline.slices_for(options.tom_bundles, options.inference.single_orientation)
        with progress.bar(slices, "slice", "network") as advance:
            # handed over, no reference kept here: predict frees the input once the cube is made
            result = pipeline.predict(checked.take_peaks(), advance, checked.masks, options.tom_bundles,
                                      options.inference)
            if checked.masks is not None:  # TOM: the parts run while the bundles are written
                written, write_timings = write_result(result, staged, options.save, options.qc, name, notes=notes)
        if checked.masks is None:
            written, write_timings = write_result(result, staged, options.save, options.qc, name, background,
                                                  progress, notes)
        if checked.mni is not None:  # --preprocess: the outputs back on the input's grid, before the commit
            back_to_subject([staged.path(f.relative_to(checked.outdir)) for f in written], checked.mni,
                            options.save.probabilities, options.output_type)
        for final, current in checked.carried:  # a raw input's peaks (runtime.runner.raw_input)
            shutil.move(current, staged.path(final.relative_to(checked.outdir)))
            written.append(final)
    timings = {"open_backend": pipeline.open_seconds, **result.timings, "load": checked.read_seconds,
               **write_timings, "total": round(time.perf_counter() - started + checked.read_seconds, 3)}
    stats = result.slices
    log.info("wrote %d file(s) under %s (network: %d slices, %d run, %d empty ones skipped)", len(written),
             checked.outdir, stats.slices if stats else 0, stats.run if stats else 0, stats.skipped if stats else 0)
    rss = peak_rss_mb()
    document = run_document(result.source, result.placement, pipeline.manifest.slice_size, options,
                            pipeline.record(), stats, timings, rss, written)
    document["orientation"] = checked.orientation
    if checked.mni is not None:
        document["preprocess"] = checked.mni.record()
    return RunReport(tuple(written), document["timings_s"], stats.run if stats else None, rss, document)
