"""Case builders for generated NIfTI inputs: gzip damage, header fields, data types, shapes, affines and values.
Each builder writes its case's files under ``d``, sets ``case.argv`` and returns the case's detail."""
from __future__ import annotations

import gzip
import math
from pathlib import Path

import nibabel as nib
import numpy as np

from tests.fuzz.common import LAS, Case, header_of, peaks_data, pick, raw_file, save, suffix


def build_gzip(rng, d: Path, case: Case) -> str:
    good = save(d / "src.nii.gz", peaks_data(rng))
    raw = bytearray(good.read_bytes())
    good.unlink()
    op = pick(rng, ["truncate", "flip", "zero-block", "append", "bad-magic", "two-members", "random", "empty-gz"])
    if op == "truncate":
        raw = raw[: int(len(raw) * rng.uniform(0.001, 0.999))]
    elif op == "flip":
        for _ in range(int(rng.integers(1, 20))):
            i = int(rng.integers(10, len(raw)))
            raw[i] ^= int(rng.integers(1, 256))
    elif op == "zero-block":
        i = int(rng.integers(10, len(raw) - 10))
        raw[i:i + int(rng.integers(1, 500))] = b"\0" * len(raw[i:i + int(rng.integers(1, 500))])
    elif op == "append":
        raw += rng.bytes(int(rng.integers(1, 5000)))
    elif op == "bad-magic":
        raw[0:2] = b"\x1f\x8c"
    elif op == "two-members":
        raw = bytearray(bytes(raw) * 2)
    elif op == "random":
        raw = bytearray(rng.bytes(int(rng.integers(1, 20000))))
    elif op == "empty-gz":
        raw = bytearray(gzip.compress(b""))
    path = d / "peaks.nii.gz"
    path.write_bytes(bytes(raw))
    case.argv = [str(path)]
    return op


HEADER_FIELDS: list[tuple[str, int | None, list]] = [
    ("dim", 0, [0, -1, 1, 2, 3, 5, 7, 8, 9]),
    ("dim", 1, [0, -1, 1, 2, 9, 32767, 65535, 100000]),
    ("dim", 2, [0, -1, 1, 2, 9, 32767, 65535]),
    ("dim", 3, [0, 1, 32767, 70000]),
    ("dim", 4, [0, -1, 1, 3, 8, 10, 32767]),
    ("dim", 5, [0, 1, 2, 32767]),
    ("datatype", None, [0, 1, 2, 4, 7, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304, 999]),
    ("bitpix", None, [0, 1, 7, 8, 16, 32, 64, 255]),
    ("vox_offset", None, [0, 1, 348, 351, 353, 368, 4096, -352, 1e12, math.nan, math.inf]),
    ("scl_slope", None, [0.0, 1.0, -1.0, math.nan, math.inf, -math.inf, 1e38, 1e-38, 1e-45]),
    ("scl_inter", None, [0.0, math.nan, math.inf, 1e38, -1e38]),
    ("pixdim", 0, [0.0, -1.0, 1.0, 5.0, math.nan]),
    ("pixdim", 1, [0.0, -1.0, 2.5, math.nan, math.inf, 1e30, 1e-30]),
    ("pixdim", 2, [0.0, -2.5, math.nan, 1e-30]),
    ("pixdim", 3, [0.0, math.inf]),
    ("sform_code", None, [0, 1, 2, 3, 4, 5, -1, 99]),
    ("qform_code", None, [0, 1, 2, 3, 4, 5, -1, 99]),
    ("srow_x", 0, [0.0, math.nan, math.inf, 1e30, 1e-30, 2.5]),
    ("srow_x", 1, [0.0, 2.5, -2.5, math.nan]),
    ("srow_y", 1, [0.0, -2.5, math.nan, 1e30]),
    ("srow_y", 0, [2.5, -2.5, 1.0]),
    ("srow_z", 2, [0.0, math.nan, 1e-30]),
    ("srow_z", 3, [math.nan, math.inf, 1e30]),
    ("quatern_b", None, [math.nan, 0.0, 1.0, -1.0, 2.0, 1e30]),
    ("quatern_c", None, [math.nan, 0.5, 2.0]),
    ("quatern_d", None, [math.nan, 1.0, -2.0]),
    ("qoffset_x", None, [math.nan, math.inf, 1e30]),
    ("magic", None, [b"n+1", b"ni1", b"xxx", b"n+2", b""]),
    ("sizeof_hdr", None, [0, 348, 540, 1543569408, -1]),
    ("intent_code", None, [0, 1001, 2003, 9999, -1]),
    ("xyzt_units", None, [0, 255]),
    ("cal_max", None, [math.nan, math.inf]),
    ("descrip", None, [b"\xff" * 79, b"\0" * 79]),
]


def build_header(rng, d: Path, case: Case) -> str:
    data = peaks_data(rng, (12, 13, 11))
    klass = nib.Nifti2Header if rng.random() < 0.2 else nib.Nifti1Header
    header = header_of(data, klass)
    if rng.random() < 0.5:
        header.set_qform(LAS, code=1)
    done = []
    for _ in range(int(rng.integers(1, 4))):
        name, index, values = pick(rng, HEADER_FIELDS)
        value = pick(rng, values)
        if name == "magic" and klass is nib.Nifti2Header and value:
            value = value[:3] + b"\0\r\n\032\n" if value.startswith(b"n+") else value
        try:
            target = header._structarr[name]
            converted = np.asarray(value).astype(target.dtype) if not isinstance(value, bytes) else value
            if index is None:
                header._structarr[name] = converted
            else:
                header._structarr[name][index] = converted
        except (ValueError, TypeError, OverflowError, IndexError):
            continue
        done.append(f"{name}{'' if index is None else f'[{index}]'}={value!r}")
    path = d / f"peaks{suffix(rng)}"
    payload = data.tobytes(order="F")
    if rng.random() < 0.3:
        payload = payload[: int(len(payload) * rng.uniform(0, 1))]
    raw_file(path, header, payload)
    case.argv = [str(path)]
    return ("nifti2 " if klass is nib.Nifti2Header else "") + (", ".join(done) or "unchanged")


DTYPES = ["complex64", "complex128", "RGB24", "RGBA32", "int8", "int16", "int32", "int64", "uint8", "uint16",
          "uint32", "float64", "float32", "scaled-int16", "scaled-uint8", "bool"]


def build_dtype(rng, d: Path, case: Case) -> str:
    data = peaks_data(rng)
    kind = pick(rng, DTYPES)
    path = d / f"peaks{suffix(rng)}"
    if kind in ("RGB24", "RGBA32"):
        names = ("R", "G", "B") if kind == "RGB24" else ("R", "G", "B", "A")
        shape = data.shape if rng.random() < 0.5 else data.shape[:3]
        save(path, np.zeros(shape, dtype=[(n, "u1") for n in names]))
    elif kind.startswith("scaled-"):
        stored = np.dtype(kind.split("-")[1])
        scale = 0.01 if stored.kind == "i" else 0.02
        offset = 0.0 if stored.kind == "i" else -2.5
        values = np.round((data - offset) / scale)
        info = np.iinfo(stored)
        values = np.clip(values, info.min, info.max).astype(stored)
        header = header_of(values)
        header.set_slope_inter(scale, offset)
        raw_file(path, header, values.tobytes(order="F"))
    elif kind == "bool":
        save(path, (data > 0).astype(np.uint8))
    else:
        dtype = np.dtype(kind)
        values = data * 100 if dtype.kind in "iu" else data
        if dtype.kind == "u":
            values = np.abs(values)
        save(path, values.astype(dtype))
    case.argv = [str(path)]
    return kind


def build_shape(rng, d: Path, case: Case) -> str:
    kind = pick(rng, ["3d", "5d", "last-not-9", "zero-dim", "one-voxel", "slab", "thin-line", "huge-header",
                      "huge-header-nifti2", "2d", "tiny-cube"])
    path = d / f"peaks{suffix(rng)}"
    data = peaks_data(rng, (12, 12, 12))
    if kind == "3d":
        save(path, data[..., 0])
    elif kind == "5d":
        save(path, data[..., None])
    elif kind == "last-not-9":
        n = int(pick(rng, [1, 3, 6, 10, 27]))
        save(path, np.resize(data, (*data.shape[:3], n)))
    elif kind == "zero-dim":
        shape = list(data.shape)
        shape[int(rng.integers(3))] = 0
        save(path, np.zeros(shape, np.float32))
    elif kind == "one-voxel":
        save(path, np.ones((1, 1, 1, 9), np.float32) * 0.5)
    elif kind == "slab":
        save(path, np.random.default_rng(1).normal(size=(int(rng.integers(100, 400)), 2, 3, 9)).astype(np.float32))
    elif kind == "thin-line":
        save(path, np.random.default_rng(1).normal(size=(int(rng.integers(2000, 40000)), 1, 1, 9)).astype(np.float32))
    elif kind in ("huge-header", "huge-header-nifti2"):
        klass = nib.Nifti2Header if kind.endswith("2") else nib.Nifti1Header
        big = 32767 if klass is nib.Nifti1Header else int(pick(rng, [100000, 10 ** 9]))
        header = klass()
        header.set_data_shape((big, big, int(pick(rng, [1, big])), 9))
        header.set_data_dtype(np.float32)
        header.set_data_offset(header.single_vox_offset)
        header.set_sform(LAS, code=2)
        raw_file(path, header, rng.bytes(int(rng.integers(0, 4096))))
    elif kind == "2d":
        save(path, data[:, :, 0, 0])
    elif kind == "tiny-cube":
        save(path, np.random.default_rng(2).normal(size=(2, 2, 2, 9)).astype(np.float32))
    case.argv = [str(path)]
    return kind


def build_affine(rng, d: Path, case: Case) -> str:
    data = peaks_data(rng)
    affine = LAS.copy()
    kind = pick(rng, ["nan", "inf", "zero", "rank-deficient", "zero-column", "permuted", "oblique", "flipped",
                      "tiny-voxels", "huge-voxels", "shear"])
    if kind == "nan":
        affine[int(rng.integers(3)), int(rng.integers(4))] = np.nan
    elif kind == "inf":
        affine[int(rng.integers(3)), int(rng.integers(4))] = np.inf
    elif kind == "zero":
        affine[:3, :3] = 0
    elif kind == "rank-deficient":
        affine[:3, 2] = affine[:3, 0] * 0.5
    elif kind == "zero-column":
        affine[:3, int(rng.integers(3))] = 0
    elif kind == "permuted":
        order = pick(rng, [[1, 0, 2], [0, 2, 1], [2, 1, 0], [1, 2, 0], [2, 0, 1]])
        affine = LAS[:, [*order, 3]]
    elif kind == "oblique":
        angle = float(rng.uniform(0.1, 40))
        axis = int(rng.integers(3))
        c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        rotation = np.eye(3)
        i, j = [a for a in range(3) if a != axis]
        rotation[[i, i, j, j], [i, j, i, j]] = [c, -s, s, c]
        affine[:3, :3] = rotation @ LAS[:3, :3]
        kind = f"oblique {angle:.1f} deg about axis {axis}"
    elif kind == "flipped":
        for axis in range(3):
            if rng.random() < 0.5:
                affine[:3, axis] *= -1
    elif kind == "tiny-voxels":
        affine[:3, :3] *= 1e-12
    elif kind == "huge-voxels":
        affine[:3, :3] *= 1e12
    elif kind == "shear":
        affine[0, 1] = float(rng.uniform(-1, 1))
    path = d / f"peaks{suffix(rng)}"
    header = header_of(data, affine=affine)  # sform only: nibabel cannot make a qform of a singular matrix
    raw_file(path, header, data.tobytes(order="F"))
    case.argv = [str(path)]
    return kind


def build_values(rng, d: Path, case: Case) -> str:
    data = peaks_data(rng)
    inside = data != 0
    kind = pick(rng, ["inf", "-inf", "nan-some", "nan-all", "near-float32-max", "1e20", "subnormal", "all-zero",
                      "one-voxel", "constant", "float64-beyond-float32", "float64-1e300"])
    dtype = np.float32
    if kind in ("inf", "-inf"):
        data.flat[int(rng.integers(data.size))] = np.inf if kind == "inf" else -np.inf
    elif kind == "nan-some":
        data[rng.random(data.shape) < 0.3] = np.nan
    elif kind == "nan-all":
        data[:] = np.nan
    elif kind == "near-float32-max":
        data[inside] *= np.float32(3e38) / np.abs(data).max()
    elif kind == "1e20":
        data *= np.float32(1e20)
    elif kind == "subnormal":
        data *= np.float32(1e-40)
    elif kind == "all-zero":
        data[:] = 0
    elif kind == "one-voxel":
        data[:] = 0
        data[tuple(int(rng.integers(s)) for s in data.shape[:3])] = 0.7
    elif kind == "constant":
        data[:] = 1.0
    elif kind == "float64-beyond-float32":
        data = data.astype(np.float64) * 1e39
        dtype = np.float64
    elif kind == "float64-1e300":
        data = data.astype(np.float64) * 1e300
        dtype = np.float64
    path = d / f"peaks{suffix(rng)}"
    save(path, data.astype(dtype))
    case.argv = [str(path)]
    return kind
