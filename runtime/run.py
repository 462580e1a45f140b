"""python -m runtime.run PEAKS: upstream TractSeg's inference path (bin/TractSeg) on an exported bundle, no JAX/torch.

load -> flip to MNI signs -> crop -> pad + zoom to the cube -> x/y/z slices through the backend -> mean of the three
probability volumes -> threshold / post-process per bundle -> back to the input grid -> flip back -> write.

Exit status: 0 done; 1 an input, bundle, backend or output problem (one line on stderr, nothing written when it
is found before the network runs, which is every check on the input, the bundle and the output locations);
2 bad command line. Existing outputs are refused unless --force, which replaces them.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.backends import BACKENDS, BackendError, choose, open_backend
from runtime.bundles import TASKS, TRACT_DEFINITIONS, model_for
from runtime.geometry import crop_to_nonzero, flip, mni_flip_axes, pad_and_zoom_to_cube
from runtime.manifest import ArtifactError
from runtime.nifti_io import InputError, default_output_dir, load_peaks, output_paths
from runtime.outputs import OutputSpec, write_outputs
from runtime.predict import fused_probabilities
from runtime.preflight import OutputError, check_float_storage, check_outputs, open_manifest, resolve_bundle_dir
from runtime.report import Timings, artifact_record, backend_record, package_versions, peak_rss_mb, write_report

PROG = "tractseg-aot"
ERRORS = (InputError, ArtifactError, BackendError, OutputError, OSError)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m runtime.run", description=__doc__.strip().splitlines()[0])
    p.add_argument("peaks", metavar="PEAKS", help="MRtrix peaks: 4D NIfTI (X, Y, Z, 9)")
    p.add_argument("-o", dest="output", metavar="OUTDIR",
                   help="output directory (default: <directory of PEAKS>/tractseg_output)")
    p.add_argument("--artifacts", metavar="DIR", help="bundle directory with manifest.json (default: "
                   "$TRACTSEG_AOT_ARTIFACTS[/<model>], else artifacts/<model> in the repository)")
    p.add_argument("--output_type", choices=TASKS, default="tract_segmentation")
    p.add_argument("--tract_definition", choices=TRACT_DEFINITIONS, default="TractQuerier+")
    p.add_argument("--single_output_file", action="store_true", help="all bundles in one 4D image")
    p.add_argument("--get_probabilities", action="store_true",
                   help="float32 probabilities instead of masks (no post-processing)")
    p.add_argument("--no_postprocess", action="store_true", help="keep small blobs (tract_segmentation)")
    p.add_argument("--backend", choices=("auto", *BACKENDS), default="auto")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--nr_cpus", type=int, default=-1, metavar="N", help="threads for the backend (-1: its default)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bars or info lines")
    p.add_argument("--report", metavar="FILE", help="write a JSON report of the run")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.nr_cpus == 0 or args.nr_cpus < -1:
        p.error(f"--nr_cpus must be -1 or a positive number, not {args.nr_cpus}")
    if args.output_type == "endings_segmentation" and args.tract_definition == "xtract":
        p.error("--tract_definition xtract only works with --output_type tract_segmentation (as upstream)")
    return args


def progress_bar(total: int, unit: str, quiet: bool) -> tuple[Callable[[int], None], Callable[[], None]]:
    """(advance, close) of a tqdm bar on stderr, or no-ops with --quiet."""
    if quiet:
        return (lambda n: None), (lambda: None)
    from tqdm import tqdm

    bar = tqdm(total=total, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=True)
    return bar.update, bar.close


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole pipeline; returns the report. Raises one of ERRORS for anything the user can fix."""
    say = (lambda msg: None) if args.quiet else (lambda msg: print(f"{PROG}: {msg}", flush=True))
    timings = Timings()
    model = model_for(args.output_type, args.tract_definition)

    # --- everything that can be refused is checked before the network runs ---
    with timings.stage("load"):
        check_float_storage(args.peaks)
        data, affine = load_peaks(args.peaks)
    manifest = open_manifest(resolve_bundle_dir(args.artifacts, model), model)
    if manifest.demo_weights:
        print(f"{PROG}: WARNING: demo weights, not anatomical ({manifest.raw['weights'].get('source', '?')}): "
              "the outputs are not tract segmentations", file=sys.stderr, flush=True)
    outdir = Path(args.output) if args.output else default_output_dir(args.peaks)
    paths = output_paths(args.output_type, model.bundles, args.single_output_file, args.get_probabilities, outdir)
    check_outputs(paths + ([Path(args.report)] if args.report else []), args.force)
    nr_cpus = None if args.nr_cpus == -1 else args.nr_cpus
    name, device = choose(args.backend, args.device, manifest)
    with timings.stage("open_backend"):  # verifies the artifact's sha256 first
        backend = open_backend(name, device, manifest, nr_cpus)
    artifact = manifest.find(name, device)
    assert artifact is not None
    say(f"{model.name}: {backend.name} {backend.version} on {backend.device} ({backend.detail}), "
        f"bundle {manifest.bundle_id} artifact {artifact.id}")

    with timings.stage("preprocess"):
        shape = tuple(int(s) for s in data.shape[:3])
        axes = mni_flip_axes(affine)
        cropped, bbox = crop_to_nonzero(flip(data, axes))
        cube, transform = pad_and_zoom_to_cube(cropped, manifest.slice_size)
        del data, cropped

    advance, close = progress_bar(3 * manifest.slice_size, "slice", args.quiet)
    with timings.stage("network"):
        try:
            fused, stats = fused_probabilities(cube, backend, manifest.batch_size, model.n_classes, advance)
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as error:
            raise BackendError(f"{backend.name} failed during inference: {' '.join(str(error).split())[:300]}") \
                from error
        finally:
            close()
    backend_info = backend_record(backend, manifest.batch_size, nr_cpus)
    del cube, backend

    spec = OutputSpec(output_type=args.output_type, bundles=model.bundles, paths=tuple(paths),
                      single_file=args.single_output_file, probabilities=args.get_probabilities,
                      postprocess=not args.no_postprocess, affine=affine, flip_axes=axes, transform=transform,
                      bbox=bbox, shape=(shape[0], shape[1], shape[2]))
    advance, close = progress_bar(model.n_classes, "bundle", args.quiet)
    with timings.stage("postprocess_write"):
        try:
            written, dtype = write_outputs(fused, spec, advance)
        finally:
            close()
    say(f"wrote {len(written)} file(s) under {outdir} "
        f"({stats.run} slices run, {stats.skipped} empty slices skipped)")
    return {
        "tool": PROG,
        "command": ["python", "-m", "runtime.run", *args.argv],
        "versions": package_versions(),
        "input": {"path": str(Path(args.peaks).resolve()), "shape": [*shape, 9], "affine": affine.tolist(),
                  "flip_axes": list(axes), "bbox": [list(b) for b in bbox], "cube_size": manifest.slice_size},
        "request": {"output_type": args.output_type, "tract_definition": args.tract_definition,
                    "single_output_file": args.single_output_file, "get_probabilities": args.get_probabilities,
                    "postprocess": not args.no_postprocess, "force": args.force},
        "model": model.name,
        "artifact": artifact_record(manifest, artifact),
        "backend": backend_info,
        "slices": stats.as_dict(),
        "timings_s": timings.as_dict(),
        "peak_rss_mb": peak_rss_mb(),
        "output_dtype": str(dtype),
        "outputs": [str(p) for p in written],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = run(args)
        if args.report:
            write_report(report, args.report)
    except ERRORS as error:
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
