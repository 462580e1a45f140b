"""Case builders for option mixes, signals while the run writes, and ``ulimit -v``."""
from __future__ import annotations

import signal
from pathlib import Path

from tests.fuzz.common import Case, peaks_data, pick, save, suffix


def build_options(rng, d: Path, case: Case) -> str:
    good = save(d / "in" / f"peaks{suffix(rng)}", peaks_data(rng))
    case.argv = [str(good)]
    chosen = []
    for option, p in (("--single_output_file", 0.3), ("--get_probabilities", 0.3), ("--no_postprocess", 0.3),
                      ("--statistics", 0.2)):
        if rng.random() < p:
            chosen.append(option)
    case.single_file = "--single_output_file" in chosen
    case.statistics = "--statistics" in chosen
    if rng.random() < 0.4:
        chosen += ["--nr_cpus", str(pick(rng, [1, 2, 1000, 0, -5, -1]))]
        case.cmdline_error = chosen[-1] in ("0", "-5")
    if rng.random() < 0.3:
        case.report = pick(rng, [d / "report.json", case.outdir / "report.json", d / "new" / "dir" / "r.json"])
        chosen += ["--report", str(case.report)]
    if rng.random() < 0.3:  # outputs already there: refused, or replaced with --force
        old = case.outdir / ("bundle_segmentations.nii.gz" if case.single_file else "bundle_segmentations/CA.nii.gz")
        old.parent.mkdir(parents=True, exist_ok=True)
        old.write_bytes(b"old")
        chosen += ["--force"] if rng.random() < 0.5 else []
        chosen.append("(old outputs)")
    case.argv += [c for c in chosen if not c.startswith("(")]
    return " ".join(chosen) or "defaults"


def build_signal(rng, d: Path, case: Case) -> str:
    size = int(rng.integers(30, 44))
    good = save(d / "in" / "peaks.nii.gz", peaks_data(rng, (size, size + 4, size - 2)))
    case.argv = [str(good)]
    case.mode = "signal"
    case.signal = int(pick(rng, [signal.SIGINT, signal.SIGTERM, signal.SIGKILL]))
    case.delay_s = float(rng.uniform(0, 2.0))
    return f"{signal.Signals(case.signal).name} {case.delay_s:.2f} s after staging, {size}^3"


def build_ulimit(rng, d: Path, case: Case) -> str:
    good = save(d / "in" / "peaks.nii.gz", peaks_data(rng))
    case.argv = [str(good), "--backend", "onnxruntime"]
    case.mode = "ulimit"
    case.ulimit_kb = int(rng.integers(420_000, 1_400_000))
    return f"ulimit -v {case.ulimit_kb}"
