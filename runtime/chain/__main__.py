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
from runtime.chain.options import ChainOptions
from runtime.cli import command_parser, guarded, path_arg
from runtime.cli.arguments import (add_backend_arguments, add_chain_arguments, add_common_arguments,
                                   add_input_arguments, add_orientation_argument, add_postprocess_argument,
                                   add_qc_arguments)
from runtime.cli.options import backend_options, chain_options, input_path
from runtime.io.nifti_io import default_output_dir


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, ChainOptions]:
    p = command_parser("tractseg-aot-chain", "runtime.chain", __doc__)
    add_input_arguments(p)
    p.add_argument("--scalar", metavar="FILE", type=path_arg,
                   help="scalar map on the peaks' grid (e.g. FA.nii.gz) for the tractometry; without it the chain "
                        "stops after tracking")
    add_chain_arguments(p)
    add_backend_arguments(p.add_argument_group("how the networks run (as runtime.run)"))
    add_postprocess_argument(p)
    add_orientation_argument(p)
    add_qc_arguments(p)
    add_common_arguments(p)
    args = p.parse_args(argv)
    args.peaks = input_path(p, args)
    return args, chain_options(p, args, backend_options(p, args))


def main(argv: list[str] | None = None) -> int:
    args, options = parse_args(argv)

    def action() -> None:
        run_chain(args.peaks, args.output or default_output_dir(args.peaks), args.scalar, options)

    return guarded(action, options.quiet, final=argv is None, prog="tractseg-aot-chain")


if __name__ == "__main__":
    sys.exit(main())
