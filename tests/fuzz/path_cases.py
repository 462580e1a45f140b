"""Case builder for path problems: empty paths, folders for files, devices, FIFOs, symbolic link loops, --report
on the input or an output, unwritable places."""
from __future__ import annotations

import os
from pathlib import Path

from tests.fuzz.common import Case, peaks_data, pick, save


def build_path(rng, d: Path, case: Case) -> str:
    good = save(d / "in" / "peaks.nii.gz", peaks_data(rng))
    case.argv = [str(good)]
    kind = pick(rng, ["empty-peaks", "empty-o", "empty-artifacts", "empty-report", "dir-as-peaks", "peaks-loop",
                      "o-loop", "report-loop", "artifacts-loop", "report-is-input", "report-is-input-force",
                      "report-is-output", "report-is-outdir", "o-is-file", "o-under-proc", "report-under-proc",
                      "dev-null", "fifo", "newline-name", "long-name", "long-o", "missing", "broken-link",
                      "o-under-file", "o-is-input-dir"])
    out = case.outdir
    if kind == "empty-peaks":
        case.argv = [""]
        case.cmdline_error = True
    elif kind == "empty-o":
        case.outdir = None
        case.argv += ["-o", ""]
        case.cmdline_error = True
    elif kind == "empty-artifacts":
        case.argv += ["--artifacts", ""]
        case.cmdline_error = True
    elif kind == "empty-report":
        case.argv += ["--report", ""]
        case.cmdline_error = True
    elif kind == "dir-as-peaks":
        (d / "dir.nii.gz").mkdir()
        case.argv = [str(d / "dir.nii.gz")]
    elif kind in ("peaks-loop", "o-loop", "report-loop", "artifacts-loop"):
        a, b = d / "loop-a", d / "loop-b"
        a.symlink_to(b)
        b.symlink_to(a)
        if kind == "peaks-loop":
            case.argv = [str(a)]
        elif kind == "o-loop":
            case.outdir = a
        elif kind == "report-loop":
            case.report = a
            case.argv += ["--report", str(a)] + (["--force"] if rng.random() < 0.5 else [])
        else:
            case.bundle_override = a
    elif kind in ("report-is-input", "report-is-input-force"):
        case.report = good
        case.argv += ["--report", str(good)] + (["--force"] if kind.endswith("force") else [])
    elif kind == "report-is-output":
        case.report = out / "bundle_segmentations" / "CST_left.nii.gz"
        case.argv += ["--report", str(case.report)]
    elif kind == "report-is-outdir":
        case.argv += ["--report", str(out)]
    elif kind == "o-is-file":
        (d / "afile").write_text("x")
        case.outdir = d / "afile"
    elif kind == "o-under-proc":
        case.outdir = Path("/proc/tractseg-aot-fuzz")
    elif kind == "report-under-proc":
        case.argv += ["--report", "/proc/tractseg-aot-fuzz.json"]
    elif kind == "dev-null":
        case.argv = ["/dev/null"]
    elif kind == "fifo":
        os.mkfifo(d / "fifo.nii.gz")
        case.argv = [str(d / "fifo.nii.gz")]
    elif kind == "newline-name":
        target = d / "new\nline peaks.nii.gz"
        good.rename(target)
        case.argv = [str(target)]
    elif kind == "long-name":
        case.argv = [str(d / ("p" * 300 + ".nii.gz"))]
    elif kind == "long-o":
        case.outdir = d / ("o" * 300) / "out"
    elif kind == "missing":
        case.argv = [str(d / "nope.nii.gz")]
    elif kind == "broken-link":
        (d / "broken.nii.gz").symlink_to(d / "gone.nii.gz")
        case.argv = [str(d / "broken.nii.gz")]
    elif kind == "o-under-file":
        (d / "afile").write_text("x")
        case.outdir = d / "afile" / "out"
    elif kind == "o-is-input-dir":
        case.outdir = good.parent
    return kind
