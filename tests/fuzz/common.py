"""The fuzzer's shared pieces: constants, the Case and Outcome records, and helpers that write NIfTI inputs."""
from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parent.parent.parent
PREFIX = "tractseg-aot: error: "
WARNING = "tractseg-aot: warning: "
STAGING_PREFIX = ".tractseg-aot-staging-"
LOCK_NAME = ".tractseg-aot.lock"
TIMEOUT_S = 90
LAS = np.array([[-2.5, 0, 0, 90.0], [0, 2.5, 0, -126.0], [0, 0, 2.5, -72.0], [0, 0, 0, 1]])


class CaseTimeout(BaseException):
    """Raised by SIGALRM in an in-process case: not an Exception, so the CLI's guard does not catch it."""


@dataclass
class Case:
    index: int
    kind: str
    detail: str
    root: Path  # the case's folder: nothing in it may change on a refusal
    argv: list[str] = field(default_factory=list)
    outdir: Path | None = None  # where the outputs go
    single_file: bool = False
    statistics: bool = False
    report: Path | None = None
    mode: str = "inprocess"  # inprocess | subprocess | signal | ulimit
    signal: int | None = None
    delay_s: float = 0.0
    ulimit_kb: int | None = None
    cmdline_error: bool = False  # exit 2 (argparse) is the right answer
    bundle: str = ""  # the good bundle
    bundle_override: Path | None = None  # --artifacts, when the case is about it


@dataclass
class Outcome:
    code: int | None
    out: str
    err: str
    seconds: float
    violations: list[str]
    note: str = ""



def peaks_data(rng: np.random.Generator, shape: tuple[int, ...] | None = None) -> np.ndarray:
    from tests.run_support import synthetic_peaks

    shape = shape or tuple(int(v) for v in rng.integers(10, 17, size=3))
    return synthetic_peaks(shape, seed=int(rng.integers(1 << 30)))


def save(path: Path, data: np.ndarray, affine: np.ndarray = LAS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    wide = data.dtype in (np.int64, np.uint64)  # nibabel wants these asked for explicitly
    nib.save(nib.Nifti1Image(data, affine, dtype=data.dtype if wide else None), path)
    return path


def raw_file(path: Path, header: nib.Nifti1Header, payload: bytes) -> Path:
    """Header bytes as they are (no nibabel check or fix), the payload at the standard offset."""
    block = header.binaryblock
    raw = block + b"\0" * (header.single_vox_offset - len(block)) + payload
    path.write_bytes(gzip.compress(raw, mtime=0) if path.name.endswith(".gz") else raw)
    return path


def header_of(data: np.ndarray, klass=nib.Nifti1Header, affine: np.ndarray = LAS) -> nib.Nifti1Header:
    header = klass()
    header.set_data_shape(data.shape)
    header.set_data_dtype(data.dtype)
    header.set_data_offset(header.single_vox_offset)
    header.set_sform(affine, code=2)
    return header


def pick(rng: np.random.Generator, values):
    return values[int(rng.integers(len(values)))]


def suffix(rng) -> str:
    return pick(rng, [".nii.gz", ".nii.gz", ".nii"])
