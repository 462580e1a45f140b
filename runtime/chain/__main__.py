"""python -m runtime.chain PEAKS -o OUT --scalar FA.nii.gz (console script: tractseg-aot-chain): TractSeg's whole
chain on one subject: tract_segmentation -> endings_segmentation -> TOM -> tracking -> tractometry.

Writes upstream's layout under OUT (default: tractseg_output beside PEAKS): bundle_segmentations/,
endings_segmentations/, TOM/, TOM_trackings/ and Tractometry.csv; without --scalar the chain stops after tracking.
The three bundles: see --artifacts-root and the per-model options. Every input, bundle and output location is
checked before the first network runs.

Exit status: 0 done; 1 an input, bundle, backend or output problem (one line on stderr); 2 bad command line;
3 internal error; 130 / 143 interrupted / terminated.
"""
from __future__ import annotations

import argparse
import sys

from runtime.chain.api import run_chain
from runtime.chain.cli import add_chain_arguments, chain_options
from runtime.chain.options import ChainOptions
from runtime.cli import add_peaks_arguments, command_parser, guarded, path_arg
from runtime.io.nifti_io import default_output_dir
from runtime.models.manifest_schema import PRECISIONS
from runtime.network.backends import BACKENDS
from runtime.options import RunOptions


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, ChainOptions]:
    p = command_parser("tractseg-aot-chain", "runtime.chain", __doc__)
    add_peaks_arguments(p)
    p.add_argument("--scalar", metavar="FILE", type=path_arg,
                   help="scalar map on the peaks' grid (e.g. FA.nii.gz) for the tractometry; without it the chain "
                        "stops after tracking")
    add_chain_arguments(p)
    r = p.add_argument_group("how the networks run (as runtime.run)")
    r.add_argument("--backend", choices=("auto", *BACKENDS), default="auto")
    r.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    r.add_argument("--precision", choices=PRECISIONS, default="fp32")
    r.add_argument("--no-self-check", dest="self_check", action="store_false")
    r.add_argument("--nr_cpus", type=int, default=-1, metavar="N",
                   help="backend threads and bundles tracked at once (-1: every core)")
    r.add_argument("--no_postprocess", action="store_true", help="keep small blobs (tract_segmentation)")
    r.add_argument("--statistics", action="store_true", help="also write statistics.json (tract_segmentation)")
    r.add_argument("--preview", action="store_true", help="also write preview.png (needs the [qc] extra)")
    p.add_argument("--force", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bars or info lines")
    args = p.parse_args(argv)
    if args.nr_cpus == 0 or args.nr_cpus < -1:
        p.error(f"--nr_cpus must be -1 or a positive number, not {args.nr_cpus}")
    run = RunOptions(backend=args.backend, device=args.device, precision=args.precision, self_check=args.self_check,
                     threads=None if args.nr_cpus == -1 else args.nr_cpus, postprocess=not args.no_postprocess,
                     statistics=args.statistics, preview=args.preview, force=args.force, quiet=args.quiet)
    return args, chain_options(p, args, run)


def main(argv: list[str] | None = None) -> int:
    args, options = parse_args(argv)

    def action() -> None:
        run_chain(args.peaks, args.output or default_output_dir(args.peaks), args.scalar, options)

    return guarded(action, options.run.quiet, final=argv is None)


if __name__ == "__main__":
    sys.exit(main())
