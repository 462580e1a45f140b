"""python -m runtime.tractometry -i DIR/TOM_trackings -o OUT.csv -e DIR/endings_segmentations -s FA.nii.gz
(console script: tractseg-aot-tractometry): upstream ``Tractometry``, same flags, defaults and CSV.

``--peak_length`` / ``--TOM`` (profiles of the best original peak's length) are refused with one line. Not
upstream's: ``--tracking_format trx`` (reads ``<bundle>.trx``; trx-python, in the ``tracking`` extra) and
``--bundles A,B`` (only those columns, as the chain writes; default all 50, upstream's CSV). A bundle without a
tractogram gets zeros (one info line says how many); see :mod:`runtime.tractometry.table` for the rule.
Exit status: 0 done; 1 a missing / mismatched input or an unwritable output (one line, no CSV written);
2 bad command line; 3 internal error.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from runtime.cli import command_parser, guarded
from runtime.cli.arguments import add_bundles_argument, add_tracking_format_argument
from runtime.errors import InputError, OutputError
from runtime.host import require_dipy
from runtime.tracking.api import parse_bundles
from runtime.tractometry.table import TRACTOMETRY_BUNDLES, tractometry


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = command_parser("tractseg-aot-tractometry", "runtime.tractometry", __doc__)
    parser.add_argument("-i", metavar="tracking_dir", dest="tracking_dir", required=True,
                        help="Folder containing the tractograms (normally '.../tractseg_output/TOM_trackings')")
    parser.add_argument("-o", metavar="csv_output", dest="csv_file_out", required=True,
                        help="CSV output file containing the results")
    parser.add_argument("-e", metavar="endings_dir", dest="endings_dir", required=True,
                        help="Folder containing the bundle endings segmentations")
    parser.add_argument("-s", metavar="scalar_img", dest="scalar_img", required=True, help="Scalar image (e.g. FA)")
    parser.add_argument("--nr_points", metavar="n", dest="nr_points", default="100",
                        help="Number of points along streamline to evaluate (default: 100)")
    # upstream's --peak_length / --TOM (the best original peak's length) are accepted and refused in one line
    parser.add_argument("--peak_length", action="store_true", default=False, help=argparse.SUPPRESS)
    parser.add_argument("--TOM", metavar="TOM_dir", dest="TOM_dir", help=argparse.SUPPRESS)
    add_tracking_format_argument(parser)
    add_bundles_argument(parser, "Comma separated list of bundles to profile, one CSV column each (default: all 50 "
                                 "that upstream's Tractometry profiles)")
    parser.add_argument("--quiet", action="store_true", default=False)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def action() -> None:
        if args.peak_length:
            raise InputError("--peak_length: not implemented in tractseg-aot (upstream's best-original-peak length)")
        require_dipy()
        try:
            nr_points = int(args.nr_points)
        except ValueError:
            raise InputError(f"--nr_points: not an integer: {args.nr_points!r}") from None
        tracking_dir, out = Path(args.tracking_dir), Path(args.csv_file_out)
        if not tracking_dir.is_dir():
            raise InputError(f"{tracking_dir}: tracking folder not found")
        if out.is_dir():
            raise OutputError(f"{out}: is a folder, not a CSV file path")
        bundles = TRACTOMETRY_BUNDLES if args.bundles_string == "all" else parse_bundles(args.bundles_string)
        table = tractometry(tracking_dir, Path(args.endings_dir), Path(args.scalar_img), nr_points,
                            args.tracking_format, bundles, progress=None if args.quiet else tqdm)
        try:
            table.write_csv(out)
        except OSError as error:
            raise OutputError(f"{out}: cannot be written ({error.strerror or error})") from None

    return guarded(action, args.quiet, final=argv is None, prog="tractseg-aot-tractometry")


if __name__ == "__main__":
    sys.exit(main())
