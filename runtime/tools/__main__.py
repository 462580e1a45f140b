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
COMMANDS = {module.NAME: module for module in (calc_fa, flip_peaks, rotate_bvecs, remove_negative_values,
                                               image_spacing)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = command_parser(PROG, "runtime.tools", __doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parsers = {}
    for name, module in COMMANDS.items():
        parsers[name] = commands.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(parsers[name], path_arg)
    args = parser.parse_args(argv)
    validate = getattr(COMMANDS[args.command], "validate", None)
    if validate is not None:
        validate(parsers[args.command], args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return guarded(lambda: COMMANDS[args.command].run(args), quiet=True, final=argv is None, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
