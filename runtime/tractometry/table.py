"""A subject's tractometry table: every bundle's profile, and the CSV exactly as upstream's ``Tractometry`` writes it.

Mirrors (TractSeg 2.10, ``bin/Tractometry``): the bundle list (``get_bundle_names("All_tractometry")``: the 72
TractQuerier+ bundles less CA, CC, MLF, FX, T_PREF/PREC/POSTC and ST_PREF/PREC/POSTC/PAR/OCC), ``DILATION = 2``,
zeros (and a warning) for a bundle with no tracking file or fewer than 5 streamlines, the first and last
segment dropped, ``np.savetxt(delimiter=";", header="A;B;...", comments="")`` with its default ``%.18e``.
``trk_legacy`` files are read as upstream's legacy reader returned them (trackvis "voxmm" coordinates, which for
upstream's legacy header are the RAS mm points).
"""
from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.affines import apply_affine
from nibabel.streamlines.trk import get_affine_trackvis_to_rasmm

from runtime.errors import InputError
from runtime.io.atomic import write_text_atomic
from runtime.models.bundles import TRACTQUERIER_BUNDLES
from runtime.tracking.prepare import check_grid
from runtime.tracking.writers import FORMATS, extension
from runtime.tractometry.profile import profile

log = logging.getLogger("tractseg_aot")

_NOT_IN_TRACTOMETRY = {"CA", "CC", "MLF_left", "MLF_right", "FX_left", "FX_right"} | {
    f"{prefix}_{part}_{side}" for prefix, parts in (("T", ("PREF", "PREC", "POSTC")),
                                                   ("ST", ("PREF", "PREC", "POSTC", "PAR", "OCC")))
    for part in parts for side in ("left", "right")}
TRACTOMETRY_BUNDLES: tuple[str, ...] = tuple(b for b in TRACTQUERIER_BUNDLES if b not in _NOT_IN_TRACTOMETRY)
DILATION = 2
MIN_STREAMLINES = 5
TRACTOMETRY_CSV = "Tractometry.csv"  # a subject's CSV in the chain's layout (runtime.chain) and a study's


@dataclass(frozen=True)
class TractometryTable:
    """Per-bundle profiles (first and last segment already dropped, as upstream): ``mean[i]`` / ``std[i]`` for
    ``bundles[i]``, each of length ``nr_points - 2``. Upstream's CSV holds ``mean`` only."""

    bundles: tuple[str, ...]
    mean: tuple[np.ndarray, ...]
    std: tuple[np.ndarray, ...]

    def csv_text(self) -> str:
        buffer = io.StringIO()
        np.savetxt(buffer, np.array(self.mean).transpose(), delimiter=";", header=";".join(self.bundles),
                   comments="")
        return buffer.getvalue()

    def write_csv(self, path: str | Path) -> Path:
        """Upstream's CSV, written atomically."""
        return write_text_atomic(path, self.csv_text())


def read_streamlines(path: Path, tracking_format: str) -> list[np.ndarray] | nib.streamlines.ArraySequence:
    """Streamlines as upstream's Tractometry reads them for ``tracking_format``."""
    try:
        loaded = nib.streamlines.load(str(path))
    except Exception as error:
        raise InputError(f"{path}: not a readable {extension(tracking_format)} tractogram "
                         f"({type(error).__name__})") from None
    if tracking_format != "trk_legacy":
        return loaded.streamlines
    if not isinstance(loaded, nib.streamlines.TrkFile):
        raise InputError(f"{path}: not a .trk file")
    to_voxmm = np.linalg.inv(get_affine_trackvis_to_rasmm(loaded.header))
    return [apply_affine(to_voxmm, sl) for sl in loaded.streamlines]


def _load(path: Path, what: str) -> nib.Nifti1Image:
    if not path.is_file():
        raise InputError(f"{path}: not found ({what})")
    try:
        return nib.load(str(path))
    except Exception as error:
        raise InputError(f"{path}: not a readable NIfTI image ({type(error).__name__})") from None


def tractometry(tracking_dir: Path, endings_dir: Path, scalar_path: Path, nr_points: int = 100,
                tracking_format: str = "tck", bundles: Sequence[str] = TRACTOMETRY_BUNDLES,
                progress=None) -> TractometryTable:
    """Upstream ``Tractometry`` as a function: checks every input it will use first, then profiles each bundle."""
    if tracking_format not in FORMATS:
        raise InputError(f"--tracking_format: {tracking_format!r} is not one of {', '.join(FORMATS)}")
    if nr_points < 3:
        raise InputError(f"--nr_points: must be at least 3, got {nr_points}")
    scalar_image = _load(scalar_path, "scalar map")
    if len(scalar_image.shape) != 3:
        raise InputError(f"{scalar_path}: expected a 3D scalar map, got shape {scalar_image.shape}")
    work = []  # everything is opened and checked before the first profile, so a bad file fails with no output
    for bundle in bundles:
        tracking = tracking_dir / f"{bundle}.{extension(tracking_format)}"
        if not tracking.is_file():
            work.append((bundle, None, None))
            continue
        beginnings_path = endings_dir / f"{bundle}_b.nii.gz"
        beginnings = _load(beginnings_path, "beginnings mask")
        check_grid(scalar_image, scalar_path, beginnings.shape, beginnings.affine, beginnings_path)
        work.append((bundle, read_streamlines(tracking, tracking_format), beginnings))
    scalar = np.nan_to_num(scalar_image.get_fdata())
    means, stds = [], []
    for bundle, streamlines, beginnings in (progress(work) if progress else work):
        mean, std = np.zeros(nr_points), np.zeros(nr_points)
        if streamlines is None:
            log.warning(f"no tracking found for bundle {bundle}; returning zeros (as upstream)")
        elif len(streamlines) >= MIN_STREAMLINES:
            mask = beginnings.get_fdata(caching="unchanged")  # not kept in the image: one bundle's at a time
            mean, std = profile(streamlines, mask, scalar, scalar_image.affine, nr_points, DILATION)
        else:
            log.warning(f"bundle {bundle} contains less than {MIN_STREAMLINES} streamlines; saving value 0 for this "
                        f"bundle (as upstream)")
        means.append(np.asarray(mean)[1:-1])
        stds.append(np.asarray(std)[1:-1])
    if len({len(m) for m in means}) > 1:
        raise InputError(f"{tracking_dir}: a bundle's streamlines form several QuickBundles clusters, so its profile "
                         f"has more than {nr_points} segments (upstream fails here too)")
    return TractometryTable(tuple(bundles), tuple(means), tuple(stds))


def read_csv(path: str | Path) -> tuple[tuple[str, ...], np.ndarray]:
    """A tractometry CSV as :meth:`TractometryTable.write_csv` (and upstream) writes it: the bundle names of its
    header and the values, (points, bundles) float64. One-line :class:`InputError` naming the file otherwise."""
    source = Path(path)
    try:
        with open(source, encoding="utf-8") as stream:
            bundles = tuple(stream.readline().strip().split(";"))
            values = np.loadtxt(stream, delimiter=";", ndmin=2)
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise InputError(f"{source}: not a readable tractometry CSV ({' '.join(str(error).split())[:120]})") \
            from None
    if not all(bundles) or values.shape[1:] != (len(bundles),):
        raise InputError(f"{source}: not a tractometry CSV ({len(bundles)} bundle names, values {values.shape})")
    return bundles, values
