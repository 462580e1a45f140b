"""python -m runtime.weights (console script: tractseg-aot-download): upstream's weights to a verified ONNX bundle,
with the deploy install alone (numpy + onnxruntime): no JAX, no torch.

Without --offline it downloads the task's upstream weights file from Zenodo into upstream's weights folder (or
--weights-dir), resumably, with the size checked and the sha256 recorded (as python -m export.download); with
--offline DIR it reads the file from DIR under upstream's name and never touches the network. The checkpoint is
read with a restricted reader (tensors and plain containers only), poured into the shipped weight-free graph
(byte for byte the ONNX python -m export writes for these weights), checked on the installed ONNX backends against
a numpy float64 reference of the network, and written with its manifest and self-check batch to --out (default:
where tractseg-aot looks, $TRACTSEG_AOT_ARTIFACTS/<model> or ~/.cache/tractseg-aot/<model>).

Exit status: 0 done; 1 a problem to fix (one line on stderr: no such file, a refused or broken checkpoint, a
failed download, the bundle exists without --force); 2 bad command line; 3 internal error; 130 interrupted.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.cli import command_parser, guarded, log, path_arg
from runtime.models.bundles import TASKS, TRACT_DEFINITIONS

PROG = "tractseg-aot-download"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = command_parser(PROG, "runtime.weights", __doc__)
    p.add_argument("--task", choices=TASKS, default="tract_segmentation")
    p.add_argument("--tract_definition", choices=TRACT_DEFINITIONS, default="TractQuerier+")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--offline", metavar="DIR", type=path_arg,
                        help="read upstream's weights file from DIR (its upstream name, e.g. "
                             "pretrained_weights_tract_segmentation_v3.npz, or Zenodo's); no network")
    source.add_argument("--weights-dir", metavar="DIR", type=path_arg,
                        help="download into DIR (default: upstream's weights folder, $TRACTSEG_WEIGHTS_DIR or "
                             "~/.tractseg); a file already there with its recorded sha256 is not fetched again")
    p.add_argument("--out", metavar="BUNDLE", type=path_arg,
                   help="bundle folder to write (default: where tractseg-aot looks for this model)")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.add_argument("--graphs", metavar="DIR", type=path_arg,
                   help="weight-free graphs to fill (default: the package's; other geometries: python -m "
                        "export.weight_free --slice-size S --batch-size B --out DIR)")
    p.add_argument("--quiet", action="store_true", help="errors and warnings only")
    return p.parse_args(argv)


def checkpoint_in(folder: Path, model) -> Path:
    """The model's weights file in ``folder``: upstream's local name, else Zenodo's file name."""
    from runtime.weights.shipped import WeightsError

    for name in (model.local_name, model.zenodo_file):
        if (folder / name).is_file():
            return folder / name
    raise WeightsError(f"{folder / model.local_name}: no such file (--offline DIR needs upstream's weights file "
                       f"for {model.name} there, named {model.local_name} or {model.zenodo_file})")


def run(args: argparse.Namespace) -> None:
    from runtime.checks.preflight import resolve_bundle_dir
    from runtime.models.bundles import model_for
    from runtime.weights.build import build_bundle, check_supported
    from runtime.weights.shipped import WeightsError

    try:
        model = model_for(args.task, args.tract_definition)
    except ValueError as error:
        raise WeightsError(str(error)) from None
    out = Path(args.out) if args.out else resolve_bundle_dir(None, model)
    check_supported(model)  # both before any download
    if out.exists() and not args.force:
        raise WeightsError(f"{out} exists (use --force to replace it)")
    if args.offline is not None:
        checkpoint = checkpoint_in(Path(args.offline), model)
    else:
        from runtime.weights.download import download_weights

        checkpoint = download_weights(model, args.weights_dir, progress=not args.quiet)
    build_bundle(model, checkpoint, out, force=args.force, graphs=Path(args.graphs) if args.graphs else None,
                 log=log.info)
    if not args.quiet:
        print(f"{PROG}: run it with: tractseg-aot PEAKS --artifacts {out}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return guarded(lambda: run(args), quiet=args.quiet, final=argv is None, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
