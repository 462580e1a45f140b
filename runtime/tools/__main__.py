"""python -m runtime.tools COMMAND ... (console script: tractseg-aot-tools): upstream TractSeg's helper commands.

Commands (upstream's flags, upstream's output): calc_FA, flip_peaks, rotate_bvecs, remove_negative_values,
get_image_spacing; ``tractseg-aot-tools COMMAND -h`` for each one's flags.

Exit status: 0 done; 1 an input or output problem or a missing extra (one line on stderr naming the file, nothing
written); 2 bad command line; 3 internal error (traceback saved); 130 interrupted.
"""
from __future__ import annotations

import argparse
import sys

from runtime.cli import command_parser, guarded, path_arg
from runtime.tools import (
    calc_fa,
    flip_peaks,
    image_spacing,
    remove_negative_values,
    rotate_bvecs,
)

PROG = "tractseg-aot-tools"


def _calc_fa_add_arguments(parser: argparse.ArgumentParser, path) -> None:
    parser.add_argument("-i", metavar="file_in", dest="file_in", type=path, required=True,
                        help="input file (4D nifti diffusion image)")
    parser.add_argument("-o", metavar="file_out", dest="file_out", type=path, required=True, help="FA image")
    parser.add_argument("--bvals", metavar="bvals", dest="bvals", type=path, required=True, help="bvals file")
    parser.add_argument("--bvecs", metavar="bvecs", dest="bvecs", type=path, required=True, help="bvecs file")
    parser.add_argument("--brain_mask", metavar="brain_mask", dest="brain_mask", type=path, required=True,
                        help="a brain mask")


def _calc_fa_run(args: argparse.Namespace) -> None:
    calc_fa.calc_fa(args.file_in, args.file_out, args.bvals, args.bvecs, args.brain_mask)


def _flip_peaks_add_arguments(parser: argparse.ArgumentParser, path) -> None:
    parser.add_argument("-i", metavar="file_in", dest="file_in", type=path, required=True,
                        help="input file (4D NIfTI peaks, 3 channels per peak)")
    parser.add_argument("-o", metavar="file_out", dest="file_out", type=path, required=True,
                        help="output file (4D NIfTI, float64 as upstream)")
    parser.add_argument("-a", metavar="axis", dest="axis", choices=flip_peaks.AXES, required=True, help="axis (x|y|z)")


def _flip_peaks_run(args: argparse.Namespace) -> None:
    flip_peaks.flip_peaks(args.file_in, args.file_out, args.axis)


def _image_spacing_add_arguments(parser: argparse.ArgumentParser, path) -> None:
    parser.add_argument("input", metavar="file_in", nargs="?", type=path, help="input NIfTI image (T1 or DWI)")
    parser.add_argument("-i", metavar="file_in", dest="file_in", type=path, help="input (instead of the positional)")


def _image_spacing_validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if (args.input is None) == (args.file_in is None):
        parser.error("give the input once: file_in, or -i file_in")
    if args.file_in is None:
        args.file_in = args.input


def _image_spacing_run(args: argparse.Namespace) -> None:
    print(image_spacing.image_spacing(args.file_in), flush=True)


def _remove_negative_values_add_arguments(parser: argparse.ArgumentParser, path) -> None:
    parser.add_argument("input", metavar="file_in", nargs="?", type=path, help="input NIfTI image (upstream's form)")
    parser.add_argument("output", metavar="file_out", nargs="?", type=path, help="output NIfTI image")
    parser.add_argument("-i", metavar="file_in", dest="file_in", type=path, help="input (instead of the positional)")
    parser.add_argument("-o", metavar="file_out", dest="file_out", type=path, help="output (instead of the positional)")


def _remove_negative_values_validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One input and one output, each given once: positionally (upstream's form), by flag, or one of each (then the
    positional is whichever the flag leaves out)."""
    positional = [value for value in (args.input, args.output) if value is not None]
    flags = [value for value in (args.file_in, args.file_out) if value is not None]
    if len(positional) + len(flags) != 2:
        parser.error("give the input and the output once each: file_in file_out, or -i file_in -o file_out")
    if args.file_in is None:
        args.file_in = positional.pop(0)
    if args.file_out is None:
        args.file_out = positional.pop(0)


def _remove_negative_values_run(args: argparse.Namespace) -> None:
    remove_negative_values.remove_negative_values(args.file_in, args.file_out)


def _rotate_bvecs_add_arguments(parser: argparse.ArgumentParser, path) -> None:
    parser.add_argument("-i", metavar="bvecs_in", dest="bvecs_in", type=path, required=True,
                        help="bvecs input file (FSL: 3 rows)")
    parser.add_argument("-t", metavar="affine_in", dest="affine_in", type=path, required=True,
                        help="affine transformation (FSL .mat file)")
    parser.add_argument("-o", metavar="bvecs_out", dest="bvecs_out", type=path, required=True,
                        help="bvecs output file (3 rows, 6 decimals)")


def _rotate_bvecs_run(args: argparse.Namespace) -> None:
    rotate_bvecs.rotate_bvecs(args.bvecs_in, args.affine_in, args.bvecs_out)


# each command's module (its NAME, HELP and typed function) and its command line: arguments, checks, run
PARSERS = {
    calc_fa: (_calc_fa_add_arguments, None, _calc_fa_run),
    flip_peaks: (_flip_peaks_add_arguments, None, _flip_peaks_run),
    image_spacing: (_image_spacing_add_arguments, _image_spacing_validate, _image_spacing_run),
    remove_negative_values: (_remove_negative_values_add_arguments, _remove_negative_values_validate,
                             _remove_negative_values_run),
    rotate_bvecs: (_rotate_bvecs_add_arguments, None, _rotate_bvecs_run),
}
COMMANDS = {module.NAME: module for module in PARSERS}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = command_parser(PROG, "runtime.tools", __doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parsers = {}
    for name, module in COMMANDS.items():
        parsers[name] = commands.add_parser(name, help=module.HELP, description=module.HELP)
        PARSERS[module][0](parsers[name], path_arg)
    args = parser.parse_args(argv)
    validate = PARSERS[COMMANDS[args.command]][1]
    if validate is not None:
        validate(parsers[args.command], args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return guarded(lambda: PARSERS[COMMANDS[args.command]][2](args), quiet=True, final=argv is None, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
