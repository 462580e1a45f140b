"""Tracking as functions: one bundle on arrays (:func:`track_bundle`), or bundles of a TractSeg output folder in
upstream's layout (:func:`track_output_folder`, what ``python -m runtime.tracking`` runs).

Mirrors (TractSeg 2.10): ``bin/Tracking`` (bundle list, output folder ``TOM_trackings``) and ``libs/tracking.py``
``track`` (empty-mask check and empty tractogram, the ``tractseg`` / ``fixed_prob`` branch, the writers).
"""
from __future__ import annotations

import difflib
import logging
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from runtime.errors import InputError
from runtime.host import available_cores
from runtime.models.bundles import TRACTQUERIER_BUNDLES
from runtime.tracking.best_orig import check_original_peaks, substitute_best_peaks
from runtime.tracking.prepare import (BundleFiles, BundleInputs, open_bundle, read_bundle_inputs, to_world,
                                      tracking_volumes)
from runtime.tracking.trx_format import require_trx
from runtime.tracking.walker import track_voxels
from runtime.tracking.writers import FORMATS, extension, save_tractogram, write_sidecar

log = logging.getLogger("tractseg_aot")

DEFAULT_SEED = 0
TRACKING_FOLDER = "TOM_trackings"


@dataclass(frozen=True)
class TrackingOptions:
    """Upstream ``Tracking``'s options that the ``tractseg`` probabilistic tracker uses (its CLI defaults)."""

    nr_fibers: int = 2000
    dilation: int = 0
    tracking_format: str = "tck"
    seed: int = DEFAULT_SEED
    best_orig_peaks: Path | None = None  # --track_best_orig: track the best of these peaks instead of the TOM


def bundle_rng(seed: int, bundle: str) -> np.random.Generator:
    """One generator per (seed, bundle), so a bundle's tractogram does not depend on which others are tracked."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(bundle.encode())]))


def track_bundle(inputs: BundleInputs, nr_fibers: int = 2000, dilation: int = 0,
                 rng: np.random.Generator | None = None) -> tuple[nib.streamlines.ArraySequence, dict[str, object]]:
    """Track one bundle (arrays as :func:`runtime.tracking.prepare.read_bundle_inputs` gives them); returns the
    streamlines in RAS mm (smoothed and compressed as upstream) and a record (seeds used, early stop)."""
    rng = rng if rng is not None else bundle_rng(DEFAULT_SEED, "")
    result = track_voxels(tracking_volumes(inputs, dilation), nr_fibers, rng)
    streamlines = nib.streamlines.ArraySequence(to_world(result.streamlines, inputs))
    return streamlines, {"seeds_used": result.seeds_used, "early_stop": result.early_stop,
                         "streamlines": len(streamlines)}


def parse_bundles(text: str) -> list[str]:
    """``all`` or a comma-separated list of upstream's 72 bundle names (upstream ``parse_bundles_string``)."""
    if text == "all":
        return list(TRACTQUERIER_BUNDLES)
    bundles = text.strip().split(",")
    for bundle in bundles:
        if bundle not in TRACTQUERIER_BUNDLES:
            close = difflib.get_close_matches(bundle, TRACTQUERIER_BUNDLES, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else " (upstream's 72 names, e.g. CST_left, AF_right)"
            raise InputError(f"--bundles: invalid bundle name: {bundle}{hint}")
    return bundles


def empty_masks(files: BundleFiles, images: dict[str, nib.Nifti1Image]) -> list[str]:
    names = {"bundle": "tract mask", "beginnings": "tract beginnings mask", "endings": "tract endings mask"}
    return [label for key, label in names.items() if not np.asanyarray(images[key].dataobj).max() > 0]


def check_options(options: TrackingOptions) -> None:
    """The options' values (one line each), and trx-python when the format is ``trx``."""
    if options.tracking_format not in FORMATS:
        raise InputError(f"--tracking_format: {options.tracking_format!r} is not one of {', '.join(FORMATS)}")
    if options.nr_fibers < 1:
        raise InputError(f"--nr_fibers: must be at least 1, got {options.nr_fibers}")
    if options.dilation < 0:
        raise InputError(f"--tracking_dilation: must be >= 0, got {options.dilation}")
    if options.tracking_format == "trx":
        require_trx()


def check_folder(output_dir: Path, bundles: Sequence[str], options: TrackingOptions) -> list[tuple[str, BundleFiles]]:
    """Every check before tracking: the options, and each bundle's four files opened (headers only) and on one
    grid (and ``--track_best_orig``'s peaks on it), so a bad input fails with nothing written."""
    check_options(options)
    checked = [(bundle, BundleFiles.under(output_dir, bundle)) for bundle in bundles]
    for _, files in checked:
        images = open_bundle(files)
        if options.best_orig_peaks is not None:
            check_original_peaks(options.best_orig_peaks, images["bundle"], files.bundle)
    return checked


def output_files(out_dir: Path, bundles: Sequence[str], tracking_format: str, best_orig: bool = False) -> list[Path]:
    """Every file tracking ``bundles`` into ``out_dir`` may write: ``<bundle>.<ext>``, its ``.json`` sidecar and,
    with ``--track_best_orig``, the best peaks ``<bundle>.nii.gz`` (for the ``--force`` check)."""
    files = []
    for bundle in bundles:
        tractogram = out_dir / f"{bundle}.{extension(tracking_format)}"
        files += [tractogram, tractogram.with_name(tractogram.name + ".json")]
        files += [out_dir / f"{bundle}.nii.gz"] if best_orig else []
    return files


def track_output_folder(output_dir: Path, bundles: Sequence[str], options: TrackingOptions,
                        tracking_folder: str = TRACKING_FOLDER, progress=None, nr_cpus: int = 1) -> list[Path]:
    """Track ``bundles`` of a TractSeg output folder into ``output_dir/<tracking_folder>/<bundle>.<ext>``.

    Every bundle's four files are opened and checked first (:func:`check_folder`, so a missing or mismatched file
    fails with nothing written); then each bundle is tracked and written atomically with a ``.json`` sidecar
    holding the seed. Existing files are replaced: the caller refuses them first (``--force``, :func:`output_files`).
    ``nr_cpus`` (-1: all usable CPUs, as upstream) bundles are tracked at once in worker processes; each bundle
    has its own generator, so the files do not depend on ``nr_cpus``."""
    checked = check_folder(output_dir, bundles, options)
    out_dir = output_dir / tracking_folder
    workers = min(len(checked), available_cores() if nr_cpus == -1 else max(1, nr_cpus))
    if workers <= 1:
        return [_track_and_write(bundle, files, options, out_dir)
                for bundle, files in (progress(checked) if progress else checked)]
    with ProcessPoolExecutor(workers) as pool:
        futures = [pool.submit(_track_and_write, bundle, files, options, out_dir) for bundle, files in checked]
        try:
            for future in (progress(as_completed(futures), total=len(futures)) if progress
                           else as_completed(futures)):
                future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return [future.result() for future in futures]


def _track_and_write(bundle: str, files: BundleFiles, options: TrackingOptions, out_dir: Path) -> Path:
    """One bundle: track (or the empty tractogram), write the tractogram and its sidecar (each atomically)."""
    images = open_bundle(files)
    target = out_dir / f"{bundle}.{extension(options.tracking_format)}"
    started = time.perf_counter()
    empty = empty_masks(files, images)
    affine, shape = images["bundle"].affine, images["bundle"].shape[:3]
    if empty:
        log.warning(f"{bundle}: {', '.join(empty)} empty; writing an empty tractogram ({target})")
        streamlines, record = nib.streamlines.ArraySequence(), {"seeds_used": 0, "early_stop": False,
                                                                "streamlines": 0, "empty_masks": empty}
    else:
        inputs = read_bundle_inputs(files, images)
        if options.best_orig_peaks is not None:
            inputs = substitute_best_peaks(inputs, options.best_orig_peaks, out_dir / f"{bundle}.nii.gz")
        streamlines, record = track_bundle(inputs, options.nr_fibers, options.dilation,
                                           bundle_rng(options.seed, bundle))
    record.update(bundle=bundle, seed=options.seed, seed_derivation="SeedSequence([seed, crc32(bundle)])",
                  nr_fibers=options.nr_fibers, tracking_dilation=options.dilation,
                  tracking_format=options.tracking_format,
                  peaks_tracked="TOM" if options.best_orig_peaks is None else f"best of {options.best_orig_peaks}",
                  seconds=round(time.perf_counter() - started, 3))
    save_tractogram(target, streamlines, affine, shape, options.tracking_format, metadata=record)
    write_sidecar(target.with_name(target.name + ".json"), record)
    return target
