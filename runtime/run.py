"""python -m runtime.run PEAKS (console script: tractseg-aot): upstream TractSeg's CLI on an exported bundle.

A thin command line over :class:`runtime.pipeline.TractSegPipeline`: every check on the input, the bundle and
the output locations runs before the network; the output folder is locked for the run; outputs are staged and
moved into place together at the end (:mod:`runtime.outputs.output_set`), the report last.

Exit status: 0 done; 1 an input, bundle, backend or output problem (one line on stderr, no output written);
2 bad command line; 3 internal error (a bug: the traceback is saved to a file named on stderr);
130 interrupted (SIGINT); 143 terminated (SIGTERM). Existing outputs are refused unless --force.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from runtime.network.backends import BACKENDS
from runtime.models.bundles import TASKS, TRACT_DEFINITIONS, model_for
from runtime.cli import PROG, guarded  # noqa: F401 (guarded: part of this module's API)
from runtime.errors import OutputError
from runtime.io.geometry import crop_to_nonzero
from runtime.checks.input_checks import check_cube_aspect
from runtime.models.manifest_schema import PRECISIONS
from runtime.io.nifti_io import default_output_dir, output_dtype, output_paths
from runtime.outputs.output_set import COMMITTED, output_folder
from runtime.pipeline import ReadPeaks, TractSegPipeline, read_peaks
from runtime.checks.preflight import check_outputs, open_manifest, resolve_bundle_dir
from runtime.qc.report import package_versions, peak_rss_mb, write_report
from runtime.outputs.segmentation import SaveOptions
from runtime.session import (PREVIEW_FILE, STATISTICS_FILE, BundleHooks, Progress, first_peak_length,
                             preview_dependency_check)

log = logging.getLogger("tractseg_aot")


def _path(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path")
    return text


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The options runtime.run and runtime.cohort share (upstream's, plus the runtime's own)."""
    p.add_argument("--artifacts", metavar="DIR", type=_path, help="bundle directory with manifest.json (default: "
                   "$TRACTSEG_AOT_ARTIFACTS[/<model>], else ~/.cache/tractseg-aot/<model>)")
    p.add_argument("--output_type", choices=TASKS, default="tract_segmentation")
    p.add_argument("--tract_definition", choices=TRACT_DEFINITIONS, default="TractQuerier+")
    p.add_argument("--single_output_file", action="store_true", help="all bundles in one 4D image")
    p.add_argument("--get_probabilities", action="store_true",
                   help="float32 probabilities instead of masks (no post-processing)")
    p.add_argument("--no_postprocess", action="store_true", help="keep small blobs (tract_segmentation)")
    p.add_argument("--backend", choices=("auto", *BACKENDS), default="auto")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32: the exact path (default); bf16/int8/fp16: faster, with the loss the export measured "
                        "and recorded in the bundle (an error where the bundle or the host lacks it)")
    p.add_argument("--no-self-check", dest="self_check", action="store_false",
                   help="skip the bundle's check batch run when the backend opens (one batch)")
    p.add_argument("--nr_cpus", type=int, default=-1, metavar="N",
                   help="threads for the backend (-1: its default; capped at the cores available)")
    p.add_argument("--statistics", action="store_true", help="also write statistics.json (per-bundle volume, ...)")
    p.add_argument("--preview", action="store_true", help="also write preview.png (needs the [qc] extra)")
    p.add_argument("--force", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bars or info lines")


def check_run_options(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.nr_cpus == 0 or args.nr_cpus < -1:
        p.error(f"--nr_cpus must be -1 or a positive number, not {args.nr_cpus}")
    if args.output_type == "endings_segmentation" and args.tract_definition == "xtract":
        p.error("--tract_definition xtract only works with --output_type tract_segmentation (as upstream)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m runtime.run", description=__doc__.strip().splitlines()[0])
    p.add_argument("peaks", metavar="PEAKS", type=_path, help="MRtrix peaks: 4D NIfTI (X, Y, Z, 9)")
    p.add_argument("-o", dest="output", metavar="OUTDIR", type=_path,
                   help="output directory (default: <directory of PEAKS>/tractseg_output)")
    add_run_options(p)
    p.add_argument("--report", metavar="FILE", type=_path, help="write a JSON report of the run")
    args = p.parse_args(argv)
    check_run_options(p, args)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def open_pipeline(args: argparse.Namespace) -> TractSegPipeline:
    return TractSegPipeline.open(args.artifacts, args.output_type, args.tract_definition, args.backend,
                                 args.device, None if args.nr_cpus == -1 else args.nr_cpus, args.precision,
                                 args.self_check)


def save_options(args: argparse.Namespace) -> SaveOptions:
    return SaveOptions(single_file=args.single_output_file, probabilities=args.get_probabilities,
                       postprocess=not args.no_postprocess)


def request_record(args: argparse.Namespace) -> dict[str, Any]:
    return {"output_type": args.output_type, "tract_definition": args.tract_definition,
            "single_output_file": args.single_output_file, "get_probabilities": args.get_probabilities,
            "postprocess": not args.no_postprocess, "statistics": args.statistics, "preview": args.preview,
            "precision": args.precision}


def extra_files(args: argparse.Namespace, outdir: Path) -> list[Path]:
    return [outdir / name for name, on in ((STATISTICS_FILE, args.statistics), (PREVIEW_FILE, args.preview)) if on]


def segment_subject(pipeline: TractSegPipeline, peaks: str | ReadPeaks, outdir: Path, args: argparse.Namespace,
                    subject: str, report: Path | None = None) -> dict[str, Any]:
    """One subject, all or nothing: read, check outputs, lock ``outdir``, predict, stage, commit. Returns the
    run's report (also used by runtime.cohort). Raises TractSegError for anything the user can fix."""
    started = time.perf_counter()
    given_peaks = pipeline.read(peaks)
    options = save_options(args)
    model = pipeline.model
    files = output_paths(model.task, model.bundles, options.single_file, options.probabilities, outdir)
    extras = extra_files(args, outdir)
    check_outputs(files + extras, args.force, report, inputs=[Path(given_peaks.source)])
    preview_dependency_check(args)
    progress = Progress(args.quiet)
    given = given_peaks
    del given_peaks
    background = first_peak_length(given.data) if args.preview else None
    needed = model.n_classes * given.data[..., 0].size * 4 + (2 << 20)  # outputs are at most 4 bytes a voxel
    with output_folder(outdir, files + extras, args.force, needed) as staged:
        with progress.bar(3 * pipeline.manifest.slice_size, "slice") as advance:
            segmentation = pipeline.predict(given, advance)
        del given
        t0 = time.perf_counter()
        hooks = BundleHooks(segmentation, background, args.statistics, options.probabilities, subject,
                            pipeline.model.name)
        with progress.bar(model.n_classes, "bundle") as advance:
            def on_bundle(index: int, name: str, volume) -> None:
                hooks.add(index, name, volume)
                advance(1)

            written = segmentation.write_into(staged, options, on_bundle)
            written += hooks.finish(staged)
        timings = {**segmentation.timings, "postprocess_write": round(time.perf_counter() - t0, 3)}
        if hooks.stats is not None or hooks.canvas is not None:
            timings["of_which_statistics_preview"] = round(hooks.seconds, 3)
    timings["total"] = round(time.perf_counter() - started, 3)
    stats = segmentation.slices
    log.info("wrote %d file(s) under %s (%d slices run, %d empty slices skipped)", len(written), outdir,
             stats.run if stats else 0, stats.skipped if stats else 0)
    p = segmentation.placement
    return {
        "tool": PROG, "versions": package_versions(),
        "input": {"path": str(Path(segmentation.source).resolve()), "shape": [*p.shape, 9], "affine": p.affine.tolist(),
                  "flip_axes": list(p.flip_axes), "bbox": [list(b) for b in p.bbox],
                  "cube_size": pipeline.manifest.slice_size},
        "request": {**request_record(args), "force": args.force},
        **pipeline.record(),
        "slices": stats.as_dict() if stats else None,
        "timings_s": {"open_backend": pipeline.open_seconds, **timings},
        "peak_rss_mb": peak_rss_mb(),
        "output_dtype": str(output_dtype(model.task, options.probabilities, options.postprocess)),
        "outputs": [str(f) for f in written],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole CLI run; returns the report. Raises TractSegError for anything the user can fix.

    The cheap checks come first (bundle manifest, output locations, the input), then the backend is opened
    (sha256 of the artifact, load), then the subject runs."""
    outdir = Path(args.output) if args.output else default_output_dir(args.peaks)
    report_path = Path(args.report) if args.report else None
    model = model_for(args.output_type, args.tract_definition)
    manifest = open_manifest(resolve_bundle_dir(args.artifacts, model), model)
    options = save_options(args)
    files = output_paths(model.task, model.bundles, options.single_file, options.probabilities, outdir)
    check_outputs(files + extra_files(args, outdir), args.force, report_path, inputs=[Path(args.peaks)])
    started = time.perf_counter()
    given = read_peaks(args.peaks, manifest.slice_size, model.n_classes)
    read_seconds = round(time.perf_counter() - started, 3)
    _, bbox = crop_to_nonzero(given.data)  # the cube-aspect check again in predict, here before the backend opens
    check_cube_aspect(given.source, tuple(b - a for a, b in bbox))
    pipeline = open_pipeline(args)
    log.info("%s", pipeline.describe())
    report = segment_subject(pipeline, given, outdir, args, subject_name(args.peaks), report_path)
    report["timings_s"]["load"] = read_seconds
    report["command"] = ["python", "-m", "runtime.run", *args.argv]
    return report


def subject_name(peaks: str) -> str:
    """A name for the picture's title: the file name, without .nii.gz."""
    name = Path(peaks).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def action() -> None:
        report = run(args)
        if args.report:
            try:
                write_report(report, args.report)
            except OSError as error:  # e.g. a full disk: the outputs are in place, only the report is missing
                raise OutputError(f"--report {args.report}: cannot be written ({error.strerror or error}); the "
                                  f"outputs were written under {COMMITTED[-1] if COMMITTED else 'the output folder'}"
                                  ) from None

    return guarded(action, args.quiet, final=argv is None)  # argv None: the command line (python -m, console script)


if __name__ == "__main__":
    sys.exit(main())
