"""A subject's checks, each made once, cheap ones first and all before a backend opens:
:func:`check_destination` (the outputs' locations, the extras asked for) and :func:`read_subject` (the input read
with every check of :mod:`runtime.checks.input_checks`, the cube's aspect, TOM's bundle masks)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.checks.preflight import check_outputs
from runtime.io.peaks_input import PeaksInput, ReadPeaks, check_aspect, read_peaks
from runtime.models.manifest import Manifest
from runtime.options import RunOptions
from runtime.qc.collectors import preview_dependency_check
from runtime.runner.orientation import check_orientation
from runtime.preprocess.spacing import to_model_spacing
from runtime.runner.preprocess import MniMove, move_to_mni
from runtime.tom import check_masks, default_masks_dir


@dataclass
class CheckedSubject:
    """An input read and checked, with the output folder it goes to (checked too) and the report's path.
    :func:`runtime.runner.subject.run_subject` takes the input out (:meth:`take_peaks`) so that it is freed once
    the cube is made."""

    peaks: ReadPeaks | None
    outdir: Path
    files: tuple[Path, ...]
    report: Path | None = None
    read_seconds: float = 0.0
    masks: Path | None = None  # TOM: the bundle segmentations folder, checked
    carried: tuple[tuple[Path, Path], ...] = ()  # (final path, where it is now): committed with the outputs
    orientation: dict[str, Any] | None = None  # the orientation check's verdict (runtime.runner.orientation)
    mni: MniMove | None = None  # --preprocess: the run happens in MNI space (runtime.runner.preprocess)

    def take_peaks(self) -> ReadPeaks:
        """The input, handed over: this record no longer holds it, so the pipeline frees it as soon as the
        network's cube is made (HCP size: 131 MB of float32 peaks not resident during the network)."""
        peaks, self.peaks = self.peaks, None
        if peaks is None:
            raise RuntimeError("this subject's input was already handed to a run")
        return peaks


def _input_paths(peaks: PeaksInput | ReadPeaks) -> list[Path]:
    if isinstance(peaks, ReadPeaks):
        return [Path(peaks.source)]
    return [Path(peaks)] if isinstance(peaks, (str, os.PathLike)) else []


def check_destination(peaks: PeaksInput | ReadPeaks, outdir: Path, options: RunOptions,
                      report: Path | None = None) -> list[Path]:
    """The outputs' locations (none exists unless ``options.force``; neither the input nor the report is an
    output) and the extras asked for (Pillow for the preview); returns every output file."""
    files = options.output_files(outdir)
    check_outputs(files, options.force, report, inputs=_input_paths(peaks))
    preview_dependency_check(options.qc.preview)
    return files


def read_subject(peaks: PeaksInput | ReadPeaks, outdir: Path, files: list[Path], options: RunOptions,
                 manifest: Manifest, report: Path | None = None,
                 carried: tuple[tuple[Path, Path], ...] = ()) -> CheckedSubject:
    """The input read with all its checks, the cube's aspect and the orientation check; TOM: its bundle masks.
    ``carried``: files made before the run (a raw input's peaks) to commit with the outputs. Raises
    TractSegError."""
    started = time.perf_counter()
    given = read_peaks(peaks, manifest.slice_size, options.model.largest_part.n_classes)
    read_seconds = round(time.perf_counter() - started, 3)
    orientation = check_orientation(given, options.orientation)  # in the subject's own axes
    if options.inference.super_resolution:  # upstream resamples right after loading; the outputs stay there
        given = ReadPeaks(*to_model_spacing(given.data, given.affine), given.source)
    masks_grid = (given.data.shape[:3], given.affine)
    mni = None
    if options.preprocess is not None:
        given, mni = move_to_mni(given, options.preprocess)
    given = check_aspect(given)
    masks = None
    if options.model.task == "TOM":
        masks = check_masks(options.tract_segmentations_path or default_masks_dir(outdir),
                            options.tom_bundles or options.model.bundles, *masks_grid)
    extra = tuple(final for final, _ in carried if final not in files)
    return CheckedSubject(given, outdir, tuple(files) + extra, report, read_seconds, masks, carried, orientation,
                          mni)
