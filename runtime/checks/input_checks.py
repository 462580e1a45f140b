"""Checks of a peak image that can be made before the data is read or the network runs.

Every refusal is an :class:`runtime.io.nifti_io.InputError` with one line naming the file and what is wrong:

* header level, before any allocation (:func:`check_header`): data type (complex, RGB and other non-real types
  refused by name; unscaled integers refused), the affine (finite, non-singular, axis-ordered; see
  :func:`affine_problem`), the dims against the file's size (a header that claims more data than the file can
  hold), and a memory estimate of the run against the memory available.
* data level, after reading (:func:`check_values`): values normalisable in float32 (:data:`MAX_ABS_VALUE`).
* cube level, after cropping (:func:`check_cube_aspect`): the padded cube is a sane size for the nonzero region.

Upstream TractSeg does none of these: it segments a permuted or oblique image in the wrong orientation, and a
header claiming 32767^3 voxels ends in a MemoryError traceback.
"""
from __future__ import annotations

import math
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from runtime.models.manifest import PEAK_CHANNELS
from runtime.errors import InputError

# |value| above this cannot be normalised in float32: the per-slice variance sums up to 9*144*144 squares, and
# (1e15)^2 * 186,624 = 1.9e35 stays below float32's 3.4e38. Real peak amplitudes are O(1).
MAX_ABS_VALUE = 1e15
# deflate cannot compress by more than 1032:1, so a .nii.gz can hold at most this many data bytes per file byte
MAX_GZIP_RATIO = 1032
# nonzero region's longest extent over its shortest; brains are ~1.3, a whole-brain slab at most a few
MAX_CUBE_ASPECT = 10
OBLIQUE_WARN_DEGREES = 0.5


@dataclass(frozen=True)
class HeaderFacts:
    shape: tuple[int, ...]
    affine: np.ndarray
    oblique_degrees: float  # largest angle between a voxel axis and its own world axis


def _kind_problem(dtype: np.dtype) -> str | None:
    """Data that holds no real numbers at all (checked before the shape: an RGB colour map is 3D)."""
    if dtype.kind == "c":
        return f"complex data ({dtype}); peak images hold real directions"
    if dtype.kind == "V" or dtype.names:
        name = "RGB24" if dtype.names == ("R", "G", "B") else "RGBA32" if dtype.names == ("R", "G", "B", "A") \
            else str(dtype)
        return f"{name} data (a colour image, not peak directions)"
    return None


def _dtype_problem(dtype: np.dtype, slope: float, inter: float) -> str | None:
    if dtype.kind in "biu" and slope == 1.0 and inter == 0.0:
        return (f"integer data ({dtype}, no scaling); peak images hold float directions "
                "(e.g. MRtrix sh2peaks writes float32)")
    if dtype.kind not in "fiub":
        return f"unsupported data type {dtype}"
    return None


def affine_problem(affine: np.ndarray) -> tuple[str | None, float]:
    """(why the affine is refused or None, obliquity in degrees).

    Refused: not finite; singular (a zero voxel axis or a degenerate matrix, e.g. an all-zero sform); permuted,
    where a voxel axis is closer to another world axis than its own (upstream reads flips off the diagonal and
    would segment such an image in the wrong orientation). Oblique is accepted as upstream accepts it.
    """
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        return "the affine (sform/qform) is not finite", 0.0
    linear = affine[:3, :3]
    norms = np.linalg.norm(linear, axis=0)
    if np.any(norms == 0) or abs(np.linalg.det(linear)) <= 1e-6 * float(np.prod(norms)):
        return f"the affine (sform/qform) is singular: {np.round(linear, 4).tolist()}", 0.0
    nearest = np.argmax(np.abs(linear), axis=0)
    if np.any(nearest != np.arange(3)):
        codes = "".join(nib.aff2axcodes(affine))
        return (f"voxel axes are permuted against the world axes (orientation {codes}); TractSeg needs axis-ordered "
                "peaks (x, y, z voxel axes along L-R, P-A, I-S): reorient first, e.g. `fslreorient2std in out` or "
                "`mrconvert in out -strides -1,2,3,4`"), 0.0
    cosines = np.abs(np.diag(linear)) / norms
    return None, float(np.degrees(np.arccos(np.clip(cosines.min(), -1.0, 1.0))))


def zero_voxel_size_problem(image: nib.Nifti1Pair) -> str | None:
    """A qform (or, with neither code set, the fall-back affine) built from a zero voxel size: singular, but
    nibabel replaces the zero by 1 when it reads the header, so the affine it reports looks fine. Read from the
    file's raw header; None when the sform is the affine or the header cannot be read again."""
    header = image.header
    try:
        if not isinstance(header, nib.Nifti1Header) or int(header["sform_code"]) != 0:
            return None
        holder = image.file_map.get("header") or image.file_map["image"]  # a .hdr/.img pair, or one file
        with nib.openers.ImageOpener(holder.filename) as f:
            raw = type(header).from_fileobj(f, check=False)
        sizes = [float(v) for v in raw["pixdim"][1:4]]
    except Exception:
        return None
    if 0.0 not in sizes:
        return None
    which = "the qform" if int(header["qform_code"]) != 0 else "the fall-back affine (no sform or qform code)"
    return (f"the affine (sform/qform) is singular: no sform, and {which} has the voxel sizes pixdim[1:4] = "
            f"{sizes} (nibabel would silently use 1 for 0)")


def available_memory_bytes() -> int | None:
    """MemAvailable, lowered to the cgroup's memory limit when one is set; None where unknown."""
    found = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit.isdigit() and int(limit) < 1 << 60:
                free = int(limit) - int(Path(usage_file).read_text().strip())
                found = free if found is None else min(found, free)
            break
        except (OSError, ValueError):
            continue
    return found


def memory_estimate_bytes(shape: tuple[int, ...], float32_storage: bool, cube: int, n_classes: int) -> int:
    """Peak bytes of the arrays of one run: the float32 data (read through float64 unless stored as float32),
    the padded channel before the zoom (its edge at most the largest dim), the cube and the fused probabilities,
    plus two input-grid bundle volumes."""
    voxels = math.prod(shape[:3])
    data = voxels * PEAK_CHANNELS * (4 if float32_storage else 4 + 8)
    padded = max(*shape[:3], PEAK_CHANNELS) ** 3 * 4
    return data + padded + cube ** 3 * 4 * (PEAK_CHANNELS + n_classes) + 2 * voxels * 4


def warn_if_oblique(name: str, degrees: float) -> None:
    """One warning, the same for a file, a nibabel image and an array, when the voxel axes are oblique."""
    if degrees > OBLIQUE_WARN_DEGREES:
        logging.getLogger("tractseg_aot").warning(
            "%s: the voxel axes are oblique by %.1f degrees to the world axes; segmenting on the voxel grid as "
            "upstream does (TractSeg expects MNI-aligned peaks)", name, degrees)


def check_layout(name: str, shape: tuple[int, ...], dtype: np.dtype, affine: np.ndarray, slope: float = 1.0,
                 inter: float = 0.0) -> float:
    """Shape (X, Y, Z, 9), data type and affine of a peak image, from a file header or an in-memory array;
    returns the obliquity in degrees."""
    problem = _kind_problem(np.dtype(dtype))
    if problem:
        raise InputError(f"{name}: {problem}")
    if len(shape) != 4 or shape[3] != PEAK_CHANNELS:
        hint = (" (a diffusion series? add --raw_diffusion_input, with --bvals/--bvecs)"
                if len(shape) == 4 and shape[3] > PEAK_CHANNELS else "")
        raise InputError(f"{name}: expected a 4D peak image of shape (X, Y, Z, {PEAK_CHANNELS}), "
                         f"got {len(shape)}D shape {shape}{hint}")
    if min(shape) < 1:
        raise InputError(f"{name}: has an empty dimension, shape {shape}")
    problem = _dtype_problem(np.dtype(dtype), slope, inter)
    if problem:
        raise InputError(f"{name}: {problem}")
    problem, oblique = affine_problem(np.asarray(affine, dtype=np.float64))
    if problem:
        raise InputError(f"{name}: {problem}")
    return oblique


def check_header(path: str | os.PathLike[str], image: nib.Nifti1Pair, cube: int, n_classes: int) -> HeaderFacts:
    """Header-level checks (see module docstring); ``image`` is the loaded (not yet read) NIfTI."""
    file = Path(path)
    shape = tuple(int(s) for s in image.shape)
    dtype = np.dtype(image.get_data_dtype())
    slope = float(getattr(image.dataobj, "slope", 1.0))
    inter = float(getattr(image.dataobj, "inter", 0.0))
    affine = np.asarray(image.affine, dtype=np.float64)
    oblique = check_layout(str(file), shape, dtype, affine, slope, inter)
    problem = zero_voxel_size_problem(image)
    if problem:
        raise InputError(f"{file}: {problem}")

    data_bytes = math.prod(shape) * dtype.itemsize
    file_bytes = file.stat().st_size
    compressed = file.name.endswith(".gz")
    capacity = file_bytes * MAX_GZIP_RATIO if compressed else file_bytes - int(image.header.get_data_offset())
    if image.file_map.get("image") and image.file_map["image"].filename not in (None, str(file)):
        capacity = data_bytes  # a .hdr/.img pair: the data file is checked when read
    if data_bytes > capacity:
        raise InputError(f"{file}: header claims {shape} x {dtype} = {data_bytes:,} bytes of data but the file can "
                         f"hold at most {max(capacity, 0):,} (corrupt header or truncated file)")
    needed = memory_estimate_bytes(shape, dtype == np.float32 and slope == 1 and inter == 0,
                                   cube, n_classes)
    available = available_memory_bytes()
    if available is not None and needed > available:
        raise InputError(f"{file}: a volume of {shape[0]}x{shape[1]}x{shape[2]} voxels needs about "
                         f"{needed / 2**30:.1f} GiB of memory, {available / 2**30:.1f} GiB is available")
    return HeaderFacts(shape=shape, affine=affine, oblique_degrees=oblique)


def check_values(name: str, data: np.ndarray) -> None:
    """Finite (after NaN -> 0), not all zero, and normalisable in float32."""
    if not np.all(np.isfinite(data)):
        raise InputError(f"{name}: contains infinite values (or values beyond float32 range)")
    peak = max(float(data.max()), -float(data.min())) if data.size else 0.0
    if peak == 0.0:
        raise InputError(f"{name}: all voxels are zero (after NaN -> 0), nothing to segment")
    if peak > MAX_ABS_VALUE:
        raise InputError(f"{name}: values up to {peak:.3g} cannot be normalised in float32 (limit "
                         f"{MAX_ABS_VALUE:.0e}); peak images hold directions of length ~1")


def check_cube_aspect(name: str, extent: tuple[int, ...]) -> None:
    """The nonzero region (cropped extent) is brain-shaped enough that padding it to a cube is sane."""
    longest, shortest = max(extent[:3]), min(extent[:3])
    if longest > MAX_CUBE_ASPECT * shortest:
        raise InputError(f"{name}: the nonzero region is {'x'.join(map(str, extent[:3]))} voxels, "
                         f"{longest / shortest:.0f}:1 (limit {MAX_CUBE_ASPECT}:1); TractSeg needs a whole-brain "
                         "peak image (it pads the region to a cube)")
