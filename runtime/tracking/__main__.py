"""python -m runtime.tracking -i PEAKS -o DIR (console script: tractseg-aot-tracking): upstream ``Tracking``.

Flags and defaults as upstream TractSeg 2.10's ``Tracking`` (``--tracking_format tck``, ``--tracking_dilation 0``,
``--nr_fibers 2000``, ``--bundles all``), plus ``--seed``. Reads ``DIR/TOM``, ``DIR/bundle_segmentations`` and
``DIR/endings_segmentations``; writes ``DIR/TOM_trackings/<bundle>.<ext>`` and a ``<bundle>.<ext>.json`` sidecar.
Modes as upstream's: the default ``prob`` (its own tracker, a numpy port: :mod:`runtime.tracking.api`), with
``--track_best_orig`` on the best original peaks (:mod:`runtime.tracking.best_orig`, folder ``BestOrig_trackings``);
``--algorithm det``, ``--track_FODs FACT|SD_STREAM|iFOD2`` and ``--no_filtering_by_endpoints`` run MRtrix ``tckgen``
with upstream's arguments (:mod:`runtime.tracking.tckgen`; one line naming ``tckgen`` when it is not on PATH).

``--tracking_format trx`` (not upstream's; trx-python, in the ``tracking`` extra) writes one ``<bundle>.trx`` per
bundle (:mod:`runtime.tracking.trx_format`).

Existing outputs (a tractogram, its sidecar, ``--track_best_orig``'s peaks) are refused without ``--force``, as
every command here does (upstream overwrites them): one line naming the first, nothing written. Every input is
checked before that, and both before any tracking.

Exit status: 0 done; 1 a missing / mismatched input or an unusable output (one line, nothing written for it);
2 bad command line; 3 internal error.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from runtime.checks.preflight import check_outputs
from runtime.cli import command_parser, guarded, path_arg
from runtime.cli.arguments import add_bundles_argument, add_common_arguments, add_tracking_arguments
from runtime.errors import InputError
from runtime.host import require_dipy
from runtime.tracking.api import TrackingOptions, check_folder, output_files, parse_bundles, track_output_folder
from runtime.tracking.modes import folder_name, tracking_mode
from runtime.tracking.tckgen import TckgenRun, check_inputs, track_folder_with_tckgen

log = logging.getLogger("tractseg_aot")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = command_parser("tractseg-aot-tracking", "runtime.tracking", __doc__)
    parser.add_argument("-i", metavar="filepath", dest="input", required=True, type=path_arg,
                        help="CSD peaks in MRtrix format (4D Nifti image with dimensions [x,y,z,9])")
    parser.add_argument("-o", metavar="directory", dest="output", type=path_arg,
                        help="TractSeg output directory (default: tractseg_output beside the input)")
    parser.add_argument("--tracking_dir", metavar="folder_name", default="auto",
                        help="Name of the folder created for the tracking output (default: TOM_trackings)")
    parser.add_argument("--algorithm", metavar="prob|det", choices=["prob", "det"], default="prob")
    parser.add_argument("--track_FODs", metavar="False|FACT|SD_STREAM|iFOD2",
                        choices=["False", "FACT", "SD_STREAM", "iFOD2"], default="False")
    parser.add_argument("--track_best_orig", action="store_true", default=False)
    add_tracking_arguments(parser)
    parser.add_argument("--no_filtering_by_endpoints", action="store_true", default=False)
    add_bundles_argument(parser, "Comma separated list of bundles to track (default: all 72)")
    parser.add_argument("--nr_cpus", metavar="n", type=int, default=-1,
                        help="Bundles tracked at once in worker processes; -1 means all available CPUs (default)")
    parser.add_argument("--verbose", action="store_true", default=False)
    add_common_arguments(parser)  # --force, --quiet
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def action() -> None:
        mode = tracking_mode(args.algorithm, args.track_FODs, args.track_best_orig, args.no_filtering_by_endpoints)
        if args.track_best_orig and not mode.best_orig:
            log.warning("--track_best_orig: ignored with --algorithm det, --track_FODs or --no_filtering_by_endpoints"
                        " (upstream reads it only in its probabilistic tracker)")
        require_dipy()
        peaks = Path(args.input)
        if not peaks.is_file():
            raise InputError(f"{peaks}: not found")
        output_dir = Path(args.output) if args.output else peaks.parent / "tractseg_output"
        if not output_dir.is_dir():
            raise InputError(f"{output_dir}: not a TractSeg output folder (not found)")
        folder = folder_name(mode, args.track_best_orig) if args.tracking_dir == "auto" else args.tracking_dir
        options = TrackingOptions(args.nr_fibers, args.tracking_dilation, args.tracking_format, args.seed,
                                  best_orig_peaks=peaks if mode.best_orig else None)
        bundles = parse_bundles(args.bundles_string)
        run = TckgenRun(mode, peaks, options, args.nr_cpus)
        if mode.uses_mrtrix:
            check_inputs(output_dir, bundles, run)
        else:
            check_folder(output_dir, bundles, options)
        check_outputs(output_files(output_dir / folder, bundles, options.tracking_format, mode.best_orig), args.force,
                      inputs=[peaks])
        progress = None if args.quiet else tqdm
        if mode.uses_mrtrix:
            track_folder_with_tckgen(output_dir, bundles, run, folder, progress)
        else:
            track_output_folder(output_dir, bundles, options, folder, progress=progress, nr_cpus=args.nr_cpus)

    return guarded(action, args.quiet, final=argv is None, prog="tractseg-aot-tracking")


if __name__ == "__main__":
    sys.exit(main())
