"""Reading the peak image and writing outputs in upstream TractSeg's layout.

Mirrors (TractSeg 2.10): the input handling of ``bin/TractSeg`` (``nib.load`` + ``get_fdata``, the 4D/9 check,
``np.nan_to_num`` in ``python_api.run_tractseg``) and its savers ``img_utils.save_multilabel_img_as_multiple_files``
/ ``save_multilabel_img_as_multiple_files_endings`` and the ``--single_output_file`` branch.

Upstream output layout (``outdir`` defaults to ``<input dir>/tractseg_output``):

* tract_segmentation, per bundle (default): ``<outdir>/bundle_segmentations/<bundle>.nii.gz``
* tract_segmentation, ``--single_output_file``: ``<outdir>/bundle_segmentations.nii.gz`` (4D, bundle order)
* endings_segmentation, per region: ``<outdir>/endings_segmentations/<bundle>_b.nii.gz`` and ``..._e.nii.gz``
* endings_segmentation, ``--single_output_file``: ``<outdir>/bundle_endings.nii.gz`` (4D)

The per-bundle folder for tract_segmentation is ``--tract_segmentation_output_dir`` (default
"bundle_segmentations"); the single-file name ignores that option. ``--get_probabilities`` does not change names.
Each file is ``nib.Nifti1Image(data, affine)`` with a fresh header (sform code 2, qform code 0) and the dtype of the
array upstream holds at that point (see :func:`output_dtype`).

Input decisions (upstream only checks "4D with last dim 9" and then prints and exits with status 0):
every problem raises :class:`InputError` with one line "<file>: <what is wrong>". Accepted: NIfTI-1/-2 single files
and pairs. Refused beyond upstream: other formats nibabel could read (MGH, MINC, ...), a non-finite affine, an
all-zero volume (upstream crashes in crop_to_nonzero), +/-inf values (upstream turns them into 1.8e308, then
inf in float32, and silently writes empty or garbage masks), unscaled integer storage, and everything
:mod:`runtime.checks.input_checks` refuses (complex/RGB data, singular or permuted affines, a header claiming more data
than the file holds, a volume that does not fit in memory, values that cannot be normalised in float32).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from runtime.io.atomic import atomic_target
from runtime.models.bundles import TASKS as OUTPUT_TYPES
from runtime.errors import InputError, one_line
from runtime.host import CollectLines
from runtime.checks.input_checks import check_header, check_values, warn_if_oblique

DEFAULT_OUTPUT_DIRNAME = "tractseg_output"


log = logging.getLogger("tractseg_aot")


def _one_line(error: BaseException) -> str:
    return one_line(error, 200)


def check_input_file(file: Path) -> None:
    """The input is a readable, non-empty regular file (one line naming it otherwise): the first, cheapest check."""
    try:
        info = file.stat()
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise InputError(f"{file}: symbolic link loop") from None
        if os.path.islink(file):  # (not Path.is_symlink: it raises for a name too long)
            raise InputError(f"{file}: broken symbolic link (target missing)") from None
        if error.errno == errno.ENOENT:
            raise InputError(f"{file}: no such file") from None
        raise InputError(f"{file}: cannot be read ({error.strerror or error})") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{file}: not a regular file")
    if info.st_size == 0:
        raise InputError(f"{file}: empty file (0 bytes)")
    if not os.access(file, os.R_OK):
        raise InputError(f"{file}: no permission to read it")


def _load(file: Path) -> tuple[nib.Nifti1Pair, list[str]]:
    """``nib.load`` with the header fixes nibabel reports (e.g. "pixdim[0] (qfac) should be 1 (default) or -1")
    collected instead of printed: nibabel's logger writes them to stderr, beside the CLI's own lines."""
    check_input_file(file)
    logger = logging.getLogger("nibabel.global")
    collect = CollectLines()
    saved = logger.handlers[:], logger.propagate
    logger.handlers[:], logger.propagate = [collect], False
    try:
        image = nib.load(file)
    except ImageFileError as error:
        raise InputError(f"{file}: not a NIfTI image ({_one_line(error)})") from error
    except Exception as error:  # nibabel raises many kinds for broken headers
        raise InputError(f"{file}: cannot read the header ({_one_line(error)})") from error
    finally:
        logger.handlers[:], logger.propagate = saved
    if not isinstance(image, (nib.Nifti1Pair, nib.Nifti2Pair)):
        raise InputError(f"{file}: is a {type(image).__name__}, not a NIfTI image")
    return image, collect.lines


def _warn_fixes(file: Path, messages: list[str]) -> None:
    for message in messages:
        log.warning("%s: nibabel fixed the header: %s", file, message)


def open_peaks(path: str | os.PathLike[str]) -> nib.Nifti1Pair:
    """The NIfTI image object (header only, nothing read), or :class:`InputError`."""
    file = Path(path)
    image, messages = _load(file)
    _warn_fixes(file, messages)
    return image


def load_peaks(path: str | os.PathLike[str], cube: int = 144, n_classes: int = 72) -> tuple[np.ndarray, np.ndarray]:
    """Load an MRtrix-style peak image as ``(data float32 (X, Y, Z, 9), affine float64 (4, 4))``, NaN set to 0.

    Values equal upstream's ``get_fdata()`` (float64) cast to float32: unscaled float32 files are read as float32
    directly, anything else through float64 to keep the same rounding. Every header check
    (:func:`runtime.checks.input_checks.check_header`, for a run at cube edge ``cube`` with ``n_classes`` outputs) is made
    before the data is read. Raises :class:`InputError` for every problem (see the module docstring).
    """
    file = Path(path)
    image, messages = _load(file)
    facts = check_header(file, image, cube, n_classes)
    _warn_fixes(file, messages)  # after the checks: a refused file gets its one error line only
    warn_if_oblique(str(file), facts.oblique_degrees)
    stored_dtype = np.dtype(image.get_data_dtype())
    unscaled = float(getattr(image.dataobj, "slope", 1.0)) == 1.0 and float(getattr(image.dataobj, "inter", 0.0)) == 0
    try:
        if stored_dtype == np.float32 and unscaled:
            data = np.asarray(image.get_fdata(dtype=np.float32, caching="unchanged"))
        else:
            with np.errstate(over="ignore"):  # beyond float32 range -> inf, refused below
                data = np.asarray(image.get_fdata(caching="unchanged")).astype(np.float32)
    except MemoryError:
        raise InputError(f"{file}: out of memory while reading {facts.shape}") from None
    except Exception as error:  # truncated gzip (EOFError, zlib.error), short file (ValueError, OSError)
        raise InputError(f"{file}: cannot read the data, file truncated or corrupt ({_one_line(error)})") from error
    if not data.flags.writeable:
        data = data.copy()
    np.nan_to_num(data, copy=False, nan=0.0, posinf=np.inf, neginf=-np.inf)
    check_values(str(file), data)
    return data, facts.affine


# the files a run writes beside upstream's layout (--statistics, --preview; a raw DWI's peaks, upstream's name)
STATISTICS_FILE = "statistics.json"
PREVIEW_FILE = "preview.png"
PEAKS_FILE = "peaks.nii.gz"
UNCERTAINTY_DIR = "bundle_uncertainties"  # --uncertainty's folder (and single file's name), upstream's


def output_paths(output_type: str, bundles: Sequence[str], single_output_file: bool, get_probabilities: bool,
                 outdir: str | os.PathLike[str],
                 tract_segmentation_dir: str = "bundle_segmentations", uncertainty: bool = False,
                 tom_dir: str = "TOM") -> list[Path]:
    """Every file upstream's CLI writes for these options, in write order (bundle order).

    ``uncertainty`` (``--uncertainty``, tract_segmentation): ``bundle_uncertainties/<bundle>.nii.gz``, or
    ``bundle_uncertainties.nii.gz`` with ``single_output_file``. ``tract_segmentation_dir`` / ``tom_dir``:
    upstream's ``--tract_segmentation_output_dir`` / ``--TOM_output_dir`` (per-bundle files only, as upstream).

    ``bundles`` are the output channel names: for endings_segmentation the ``<bundle>_b`` / ``<bundle>_e``
    names. ``get_probabilities`` is accepted for the CLI's convenience; upstream uses the same names for it.
    """
    del get_probabilities  # same file names with or without probabilities
    root = Path(outdir)
    if output_type == "tract_segmentation" and uncertainty:
        if single_output_file:
            return [root / f"{UNCERTAINTY_DIR}.nii.gz"]
        return [root / UNCERTAINTY_DIR / f"{bundle}.nii.gz" for bundle in bundles]
    if output_type == "tract_segmentation":
        if single_output_file:
            return [root / "bundle_segmentations.nii.gz"]
        return [root / tract_segmentation_dir / f"{bundle}.nii.gz" for bundle in bundles]
    if output_type == "endings_segmentation":
        if single_output_file:
            return [root / "bundle_endings.nii.gz"]
        return [root / "endings_segmentations" / f"{bundle}.nii.gz" for bundle in bundles]
    if output_type == "TOM":  # upstream's single file name, although its CLI refuses --single_output_file for TOM
        if single_output_file:
            return [root / "bundle_TOMs.nii.gz"]
        return [root / tom_dir / f"{bundle}.nii.gz" for bundle in bundles]
    if output_type == "dm_regression":
        if single_output_file:
            return [root / "bundle_density_maps.nii.gz"]
        return [root / "dm_regression" / f"{bundle}.nii.gz" for bundle in bundles]
    raise ValueError(f"unsupported output_type {output_type!r}; expected one of {OUTPUT_TYPES}")


def output_dtype(output_type: str, get_probabilities: bool, postprocess: bool = True,
                 all_masks_empty: bool = False, single_orientation: bool = False) -> np.dtype:
    """The dtype upstream's CLI writes (same for per-bundle files and the single 4D file).

    * ``--get_probabilities``: float32 (mean of float32 probabilities).
    * endings_segmentation: int16 (``mean_fusion``); with ``--single_orientation`` float32 0/1
      (``trainer.predict_img`` thresholds into its float32 volume).
    * tract_segmentation with blob removal (CLI default): int32, because ``remove_small_blobs`` returns the label
      array -- except when *every* bundle mask is empty: then each bundle is returned unchanged as uint8 and the
      stacked result stays uint8 (``all_masks_empty=True``).
    * tract_segmentation with ``--no_postprocess``: uint8 (``bundle_specific_postprocessing``).
    * TOM and dm_regression: float32 (the network's float32 outputs, masked / thresholded).
    """
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"unsupported output_type {output_type!r}; expected one of {OUTPUT_TYPES}")
    if get_probabilities or output_type in ("TOM", "dm_regression"):
        return np.dtype(np.float32)
    if output_type == "endings_segmentation":
        return np.dtype(np.float32 if single_orientation else np.int16)
    if postprocess and not all_masks_empty:
        return np.dtype(np.int32)
    return np.dtype(np.uint8)


def output_bytes(output_type: str, n_outputs: int, shape: Sequence[int], get_probabilities: bool,
                 postprocess: bool = True, single_orientation: bool = False) -> int:
    """Upper bound of the outputs' size on disk: uncompressed data plus a header per file (one sizing for every
    writer: the command line, the study runner and ``Segmentation.save``)."""
    voxels = 1
    for n in shape:
        voxels *= int(n)
    dtype = output_dtype(output_type, get_probabilities, postprocess, single_orientation=single_orientation)
    return n_outputs * (voxels * dtype.itemsize + 352)


def strip_nifti(name: str) -> str:
    """The file name without ``.nii.gz`` or ``.nii`` (any case); other names are returned unchanged."""
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def default_output_dir(input_path: str | os.PathLike[str]) -> Path:
    """Upstream's default ``-o``: ``<directory of the input>/tractseg_output``."""
    return Path(input_path).parent / DEFAULT_OUTPUT_DIRNAME


def write_nifti_atomic(array: np.ndarray, affine: np.ndarray, path: str | os.PathLike[str],
                       dtype: np.dtype | type | None = None) -> Path:
    """Write ``nib.Nifti1Image(array, affine)`` to ``path`` atomically; creates the parent folder.

    ``dtype`` sets the on-disk type (``set_data_dtype``), so a uint8 mask can be written as upstream's int32
    without holding an int32 copy: nibabel casts block by block while writing. The image goes to a hidden
    temporary name in the same folder (same extension, so the same format and compression), is fsynced, and is
    then moved over ``path`` with ``os.replace``; on any failure the temporary file is removed and an existing
    ``path`` is left as it was.
    """
    target = Path(path)
    image = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64))
    if dtype is not None:
        image.set_data_dtype(np.dtype(dtype))
    with atomic_target(target) as temporary:
        nib.save(image, temporary)
    return target
