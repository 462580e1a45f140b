"""Upstream's MRtrix tracking modes: ``tckgen`` with upstream's exact arguments, per bundle, in a staging folder.

Mirrors (TractSeg 2.10, ``libs/tracking.py`` ``track``, ``tracking_software == "mrtrix"`` and the
``filter_by_endpoints=False`` branch):

| here | upstream |
|---|---|
| :func:`dilated_mask` | ``img_utils.dilate_binary_mask``: ``binary_dilation`` ``dilation`` times, ``> 0.5``, uint8, same affine (bundle mask ``dilation``, beginnings / endings ``dilation + 1``) |
| :func:`peak_mask` | ``peak_utils.peak_image_to_binary_mask_path(peaks, ..., peak_length_threshold=0.01)``: a 4D uint8 image, one volume per peak, ``|peak| > 0.01`` (``tckgen`` seeds from its first volume) |
| :func:`tckgen_argv` | the ``tckgen`` command lines: FACT on ``TOM/<bundle>.nii.gz`` (``--algorithm det``), FACT / SD_STREAM / iFOD2 on the ``-i`` image (``--track_FODs``, 1,000,000 / 1,000,000 / 200,000 seeds, ``-cutoff 0.05``, no ``-quiet``), FACT on the TOM seeded from the peak mask (``--no_filtering_by_endpoints``); ``-nthreads N`` only when N > 0 |
| :func:`finish` | ``_mrtrix_tck_to_trk`` / ``fiber_utils.convert_tck_to_trk`` for ``trk`` / ``trk_legacy`` (compression 0.1 mm, no smoothing, the bundle mask's affine and shape); ``tck`` is ``tckgen``'s own file |

Upstream runs ``tckgen -force`` straight into the output folder through a shell and never looks at its status.
Here each bundle's masks and ``tckgen`` output go to a hidden staging folder under ``-o`` (removed afterwards),
``tckgen`` runs through :func:`runtime.diffusion.mrtrix.run_command` (one line with its stderr tail when it fails),
and the tractogram and its ``.json`` sidecar are renamed into place only when complete. Upstream 2.10's
``--no_filtering_by_endpoints`` stops with ``UnboundLocalError`` before ``tckgen`` (its empty-mask check reads
variables only the filtering branch sets); this runs the branch as written.
"""
from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import binary_dilation

from runtime.diffusion.mrtrix import MRtrixError, run_command, threads_option
from runtime.errors import InputError
from runtime.io.atomic import atomic_target
from runtime.tracking.api import TrackingOptions, check_options, empty_masks
from runtime.tracking.modes import TrackingMode
from runtime.tracking.prepare import COMPRESSION_ERROR, BundleFiles, load_image, open_bundle
from runtime.tracking.writers import extension, save_tractogram, write_sidecar

log = logging.getLogger("tractseg_aot")

FOD_SEEDS = {"FACT": 1_000_000, "SD_STREAM": 1_000_000, "iFOD2": 200_000}
PEAK_MASK_THRESHOLD = 0.01
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass(frozen=True)
class TckgenRun:
    """One run's settings: the mode, the ``-i`` image, upstream's options and ``--nr_cpus``."""

    mode: TrackingMode
    peaks: Path
    options: TrackingOptions
    nr_cpus: int = -1


def dilated_mask(path: Path, dilation: int) -> nib.Nifti1Image:
    """``img_utils.dilate_binary_mask(path, ..., dilation)`` as an image."""
    image = load_image(path)
    data = np.asanyarray(image.dataobj)
    mask = binary_dilation(data, iterations=dilation) if dilation > 0 else data > 0.5
    return nib.Nifti1Image(mask.astype(np.uint8), image.affine)


def peak_mask(path: Path, threshold: float = PEAK_MASK_THRESHOLD) -> nib.Nifti1Image:
    """``peak_utils.peak_image_to_binary_mask_path``: per peak (3 channels), length above ``threshold``."""
    image = load_image(path)
    if len(image.shape) != 4 or image.shape[3] % 3:
        raise InputError(f"{path}: expected a 4D peak image with 3 channels per peak, got shape {image.shape}")
    data = np.nan_to_num(image.get_fdata())
    peaks = data.reshape(data.shape[:3] + (data.shape[3] // 3, 3))
    return nib.Nifti1Image((np.linalg.norm(peaks, axis=-1) > threshold).astype(np.uint8), image.affine)


def tckgen_argv(mode: TrackingMode, source: Path, output: Path, nr_fibers: int, nr_cpus: int,
                masks: tuple[Path, Path, Path] | None = None, seed_image: Path | None = None) -> list[str]:
    """Upstream's ``tckgen`` command, token for token. ``masks``: the dilated bundle, beginnings and endings
    (filtering modes); ``seed_image``: the peak mask (``--no_filtering_by_endpoints``)."""
    head = ["tckgen", "-algorithm", mode.algorithm, str(source), str(output)]
    lengths = ["-minlength", "40", "-maxlength", "250"]
    threads = threads_option(nr_cpus)
    if not mode.filter_by_endpoints:
        return ["tckgen", "-algorithm", "FACT", str(source), str(output), "-seed_image", str(seed_image), *lengths,
                "-select", str(nr_fibers), "-force", "-quiet", *threads]
    bundle, beginnings, endings = (str(m) for m in masks)
    rois = ["-seed_image", bundle, "-mask", bundle, "-include", beginnings, "-include", endings]
    if mode.on_fods:
        return [*head, *rois, *lengths, "-seeds", str(FOD_SEEDS[mode.algorithm]), "-select", str(nr_fibers),
                "-cutoff", "0.05", "-force", *threads]
    if mode.algorithm != "FACT":
        raise InputError(f"tracking algorithm {mode.algorithm!r} on the TOMs: upstream's Tracking runs only FACT")
    return [*head, *rois, *lengths, "-select", str(nr_fibers), "-force", "-quiet", *threads]


def mrtrix_version() -> str:
    """``tckgen --version``'s first line (the MRtrix release), or one line naming the missing program."""
    if shutil.which("tckgen") is None:
        raise MRtrixError("tckgen: not found on PATH; --algorithm det, --track_FODs and --no_filtering_by_endpoints "
                          "run MRtrix 3's tckgen (apt-get install mrtrix3)")
    done = subprocess.run(["tckgen", "--version"], capture_output=True, text=True, errors="replace", check=False)
    return (done.stdout.strip().splitlines() or ["tckgen (version unknown)"])[0].strip("= ")


def check_inputs(output_dir: Path, bundles: Sequence[str], run: TckgenRun) -> None:
    """The options, and every file each bundle needs, opened (headers only) before anything runs."""
    check_options(run.options)
    for bundle in bundles:
        files = BundleFiles.under(output_dir, bundle)
        if run.mode.filter_by_endpoints:
            open_bundle(files)
            continue
        tom = load_image(files.tom)
        if len(tom.shape) != 4 or tom.shape[3] != 3:
            raise InputError(f"{files.tom}: expected a 4D TOM with 3 channels, got shape {tom.shape}")
        if run.options.tracking_format != "tck":
            load_image(files.bundle)  # the trk reference
    if not run.mode.filter_by_endpoints:
        peak_mask(run.peaks)  # shape and readability of the seed source


def track_folder_with_tckgen(output_dir: Path, bundles: Sequence[str], run: TckgenRun, tracking_folder: str,
                             progress=None) -> list[Path]:
    """Each bundle in turn (``tckgen`` is multi-threaded itself, as upstream runs it) into
    ``output_dir/<tracking_folder>/<bundle>.<ext>`` plus a ``.json`` sidecar with the command and MRtrix version."""
    version = mrtrix_version()
    check_inputs(output_dir, bundles, run)
    out_dir = output_dir / tracking_folder
    return [_track_one(bundle, output_dir, out_dir, run, version) for bundle in (progress(bundles) if progress
                                                                                 else bundles)]


def _track_one(bundle: str, output_dir: Path, out_dir: Path, run: TckgenRun, version: str) -> Path:
    files = BundleFiles.under(output_dir, bundle)
    target = out_dir / f"{bundle}.{extension(run.options.tracking_format)}"
    started = time.perf_counter()
    record: dict[str, object] = {"bundle": bundle, "software": "mrtrix", "mrtrix_version": version,
                                 "algorithm": run.mode.algorithm, "on_fods": run.mode.on_fods,
                                 "filter_by_endpoints": run.mode.filter_by_endpoints, "nr_fibers": run.options.nr_fibers,
                                 "tracking_dilation": run.options.dilation,
                                 "tracking_format": run.options.tracking_format,
                                 "seed": "none: tckgen draws its own seeds, as upstream runs it"}
    if run.mode.filter_by_endpoints:
        images = open_bundle(files)
        empty = empty_masks(files, images)
        if empty:
            log.warning(f"{bundle}: {', '.join(empty)} empty; writing an empty tractogram ({target})")
            record.update(streamlines=0, empty_masks=empty, seconds=round(time.perf_counter() - started, 3))
            save_tractogram(target, [], images["bundle"].affine, images["bundle"].shape[:3],
                            run.options.tracking_format, metadata=record)
            write_sidecar(target.with_name(target.name + ".json"), record)
            return target
    staging = Path(tempfile.mkdtemp(prefix=".tckgen-", dir=output_dir)).resolve()
    try:
        argv = _prepare(bundle, BundleFiles.under(output_dir.resolve(), bundle), staging, run)
        try:
            run_command(argv, staging)
        except MRtrixError as error:  # MRtrix colours its messages even into a pipe
            raise MRtrixError(f"{bundle}: {ANSI_ESCAPE.sub('', str(error))}") from None
        record.update(tckgen=[a.replace(str(staging), "$STAGING") for a in argv])
        finish(staging / f"{bundle}.tck", target, files.bundle, run.options.tracking_format, record, started)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_sidecar(target.with_name(target.name + ".json"), record)
    return target


def _prepare(bundle: str, files: BundleFiles, staging: Path, run: TckgenRun) -> list[str]:
    """Write the masks upstream writes into its temporary folder (same names); return the ``tckgen`` argv."""
    output = staging / f"{bundle}.tck"
    mode, options = run.mode, run.options
    if not mode.filter_by_endpoints:
        seeds = staging / "peak_mask.nii.gz"
        nib.save(peak_mask(run.peaks.resolve()), str(seeds))
        return tckgen_argv(mode, files.tom, output, options.nr_fibers, run.nr_cpus, seed_image=seeds)
    masks = (staging / f"{bundle}.nii.gz", staging / f"{bundle}_b.nii.gz", staging / f"{bundle}_e.nii.gz")
    for source, target, dilation in ((files.bundle, masks[0], options.dilation),
                                     (files.beginnings, masks[1], options.dilation + 1),
                                     (files.endings, masks[2], options.dilation + 1)):
        nib.save(dilated_mask(source, dilation), str(target))
    source = run.peaks.resolve() if mode.on_fods else files.tom
    return tckgen_argv(mode, source, output, options.nr_fibers, run.nr_cpus, masks=masks)


def finish(tck: Path, target: Path, reference: Path, tracking_format: str, record: dict[str, object] | None = None,
           started: float | None = None) -> int:
    """``tckgen``'s file into place: as it is for ``tck``; for ``trk`` / ``trk_legacy`` / ``trx`` compressed (0.1
    mm, no smoothing) and written with the bundle mask's affine and shape. Returns the number of streamlines; adds
    it (and the seconds since ``started``) to ``record``, which a ``trx`` file holds in its header."""
    if not tck.is_file():
        raise MRtrixError(f"tckgen: wrote no {tck.name}")
    record = record if record is not None else {}

    def count(n: int) -> int:
        record["streamlines"] = n
        if started is not None:
            record["seconds"] = round(time.perf_counter() - started, 3)
        return n

    streamlines = nib.streamlines.load(str(tck)).streamlines
    if tracking_format == "tck":
        with atomic_target(target) as temporary:
            shutil.copyfile(tck, temporary)
        return count(len(streamlines))
    from runtime.host import require_dipy
    require_dipy()
    from dipy.tracking.streamlinespeed import compress_streamlines

    image = load_image(reference)
    compressed = list(compress_streamlines(list(streamlines), tol_error=COMPRESSION_ERROR)) if streamlines else []
    count(len(compressed))
    save_tractogram(target, compressed, image.affine, image.shape[:3], tracking_format, metadata=record)
    return len(compressed)
