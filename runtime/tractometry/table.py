"""A subject's tractometry table: every bundle's profile, and the CSV exactly as upstream's ``Tractometry`` writes it.

Mirrors (TractSeg 2.10, ``bin/Tractometry``): the bundle list (``get_bundle_names("All_tractometry")``: the 72
TractQuerier+ bundles less CA, CC, MLF, FX, T_PREF/PREC/POSTC and ST_PREF/PREC/POSTC/PAR/OCC), ``DILATION = 2``,
zeros for a bundle with no tracking file or fewer than 5 streamlines, the first and last segment dropped,
``np.savetxt(delimiter=";", header="A;B;...", comments="")`` with its default ``%.18e``. Files are read by
:mod:`runtime.tractometry.tractograms` (``trk_legacy`` as upstream's legacy reader returned them).

Which columns, one rule for ``python -m runtime.tractometry`` and the chain: one column per bundle asked for, in
the order asked; by default all 50 that upstream's Tractometry profiles, in its order (a drop-in for its CSV); the
chain asks for the bundles it tracked, in upstream's order (``--bundles`` does the same on the command line). A bundle asked for that has no
tractogram gets zeros, as upstream; upstream warns once per bundle, here one info line says how many (a subject
tracked for 3 bundles would otherwise print 47 lines). When none of them has one, that is an error naming the
format and what the folder holds (upstream writes a CSV of zeros), as is a corrupt tractogram and a bundle none of
whose streamlines starts inside the scalar map's grid (upstream stops with a traceback there).
"""
from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from runtime.errors import InputError
from runtime.io.atomic import write_text_atomic
from runtime.models.bundles import TRACTQUERIER_BUNDLES
from runtime.tracking.prepare import check_grid
from runtime.tracking.trx_format import require_trx
from runtime.tracking.writers import FORMATS, extension
from runtime.tractometry.profile import profile
from runtime.tractometry.tractograms import find_tractograms, read_streamlines

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


def _load(path: Path, what: str) -> nib.Nifti1Image:
    if not path.is_file():
        raise InputError(f"{path}: not found ({what})")
    try:
        return nib.load(str(path))
    except Exception as error:
        raise InputError(f"{path}: not a readable NIfTI image ({type(error).__name__})") from None


def check_bundles(bundles: Sequence[str]) -> tuple[str, ...]:
    """The bundles asked for, as a tuple; one line for a name upstream's Tractometry does not profile (or a
    repeated one)."""
    for bundle in bundles:
        if bundle not in TRACTOMETRY_BUNDLES:
            known = "not one of upstream's bundle names" if bundle not in TRACTQUERIER_BUNDLES else (
                "not profiled by upstream's Tractometry (it leaves out CA, CC, MLF, FX and the T_/ST_ bundles of "
                "PREF, PREC, POSTC, PAR, OCC)")
            raise InputError(f"--bundles: {bundle}: {known}")
    if len(set(bundles)) != len(bundles):
        raise InputError(f"--bundles: a bundle is named twice ({','.join(bundles)})")
    return tuple(bundles)


def tractometry(tracking_dir: Path, endings_dir: Path, scalar_path: Path, nr_points: int = 100,
                tracking_format: str = "tck", bundles: Sequence[str] = TRACTOMETRY_BUNDLES,
                progress=None) -> TractometryTable:
    """Upstream ``Tractometry`` as a function: checks every input it will use first, then profiles each bundle.
    One column per bundle of ``bundles`` (see the module docstring for the rule)."""
    if tracking_format not in FORMATS:
        raise InputError(f"--tracking_format: {tracking_format!r} is not one of {', '.join(FORMATS)}")
    if nr_points < 3:
        raise InputError(f"--nr_points: must be at least 3, got {nr_points}")
    if tracking_format == "trx":
        require_trx()
    bundles = check_bundles(bundles)
    scalar_image = _load(scalar_path, "scalar map")
    if len(scalar_image.shape) != 3:
        raise InputError(f"{scalar_path}: expected a 3D scalar map, got shape {scalar_image.shape}")
    tractograms = find_tractograms(tracking_dir, bundles, tracking_format)
    missing = [bundle for bundle, path in tractograms.items() if path is None]
    if missing:
        log.info(f"{len(missing)} of {len(bundles)} bundles have no {extension(tracking_format)} tractogram in "
                 f"{tracking_dir}: their columns are zeros (as upstream; --bundles leaves them out)")
    work = []  # everything is opened and checked before the first profile, so a bad file fails with no output
    for bundle, tracking in tractograms.items():
        if tracking is None:
            work.append((bundle, None, None, None))
            continue
        beginnings_path = endings_dir / f"{bundle}_b.nii.gz"
        beginnings = _load(beginnings_path, "beginnings mask")
        check_grid(scalar_image, scalar_path, beginnings.shape, beginnings.affine, beginnings_path)
        work.append((bundle, tracking, read_streamlines(tracking, tracking_format), beginnings))
    scalar = np.nan_to_num(scalar_image.get_fdata())
    means, stds = [], []
    for bundle, tracking, streamlines, beginnings in (progress(work) if progress else work):
        mean, std = np.zeros(nr_points), np.zeros(nr_points)
        if streamlines is not None and len(streamlines) >= MIN_STREAMLINES:
            mask = beginnings.get_fdata(caching="unchanged")  # not kept in the image: one bundle's at a time
            try:
                mean, std = profile(streamlines, mask, scalar, scalar_image.affine, nr_points, DILATION)
            except InputError as error:
                raise InputError(f"{tracking}: {error} ({scalar_path}; not the same subject or space?)") from None
        elif streamlines is not None:
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
