"""Drawing a case: the builders by weight, and the command line each case runs with."""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.fuzz.common import Case, peaks_data, pick, save
from tests.fuzz.manifest_cases import build_manifest
from tests.fuzz.nifti_cases import build_affine, build_dtype, build_gzip, build_header, build_shape, build_values
from tests.fuzz.option_cases import build_options, build_signal, build_ulimit
from tests.fuzz.path_cases import build_path


BUILDERS: dict[str, tuple[float, Callable]] = {
    "gzip": (1.0, build_gzip), "header": (1.6, build_header), "dtype": (1.0, build_dtype),
    "shape": (1.0, build_shape), "affine": (1.0, build_affine), "values": (1.0, build_values),
    "manifest": (1.6, build_manifest), "path": (1.4, build_path), "options": (0.8, build_options),
    "signal": (0.45, build_signal), "ulimit": (0.3, build_ulimit),
}


def make_case(seed: int, index: int, root: Path, bundle: str) -> Case:
    rng = np.random.default_rng([seed, index])
    names = list(BUILDERS)
    weights = np.array([BUILDERS[n][0] for n in names])
    kind = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    d = root / f"case{index:03d}-{kind}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    case = Case(index=index, kind=kind, detail="", root=d, outdir=d / "out", bundle=bundle)
    case.detail = BUILDERS[kind][1](rng, d, case)
    bundle_dir = case.bundle_override or (d / "bundle" if kind == "manifest" else bundle)
    argv = list(case.argv) if case.argv else []
    if kind == "manifest" and not argv:
        argv = [str(save(d / "in" / "peaks.nii.gz", peaks_data(rng)))]
    if case.outdir is not None:
        argv += ["-o", str(case.outdir)]
    argv += ["--artifacts", str(bundle_dir)]
    if case.mode not in ("signal",) and "--backend" not in argv and kind not in ("path",):
        argv += ["--backend", pick(rng, ["auto", "onnxruntime", "onnxruntime"])]
    argv.append("--quiet")
    case.argv = argv
    if case.mode == "inprocess" and rng.random() < 0.07:
        case.mode = "subprocess"  # the same contract with real file descriptors and a fresh interpreter
    return case
