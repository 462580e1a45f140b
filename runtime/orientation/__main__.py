"""python -m runtime.orientation PEAKS [--json] (console script: tractseg-aot-orientation): are the peak directions
(or, with --raw_diffusion_input, a DWI's b-vectors) read with the right signs? A fibre-coherence check: the
directions as given and with each single world-axis sign flipped; the most coherent reading wins.

Prints one line (or with --json one JSON object: flip, scores, margin, confident, z, voxels, frame, seconds, notes,
file). Exit status: 0 a verdict was made (whatever it says; "confident": false means no verdict); 1 an input
problem or a missing extra (one line on stderr); 2 bad command line; 3 internal error; 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import sys

from runtime.cli import command_parser, guarded, path_arg

PROG = "tractseg-aot-orientation"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = command_parser(PROG, "runtime.orientation", __doc__)
    p.add_argument("input", metavar="PEAKS", type=path_arg, help="MRtrix peaks (4D NIfTI, 9 channels, world directions); with "
                                                  "--raw_diffusion_input a 4D DWI")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a sentence")
    d = p.add_argument_group("b-vector check of a raw DWI (needs the 'diffusion' extra: dipy)")
    d.add_argument("--raw_diffusion_input", action="store_true",
                   help="PEAKS is a DWI: check its bvecs on a quick DTI fit (MRtrix dwigradcheck's job)")
    d.add_argument("--bvals", metavar="FILE", help="FSL bvals (default: <DWI name up to its first dot>.bvals)")
    d.add_argument("--bvecs", metavar="FILE", help="FSL bvecs (default: <DWI name up to its first dot>.bvecs)")
    d.add_argument("--brain_mask", metavar="FILE",
                   help="brain mask on the DWI grid (default: nodif_brain_mask.nii.gz beside the DWI, else "
                        "median_otsu on the b0s)")
    args = p.parse_args(argv)
    if not args.raw_diffusion_input:
        given = [name for name in ("bvals", "bvecs", "brain_mask") if getattr(args, name) is not None]
        if given:
            p.error(f"--{given[0]} needs --raw_diffusion_input")
    return args


def run(args: argparse.Namespace):
    if args.raw_diffusion_input:
        from runtime.orientation.dwi import check_bvecs

        return check_bvecs(args.input, args.bvals, args.bvecs, args.brain_mask)
    from runtime.io.nifti_io import load_peaks
    from runtime.orientation.coherence import check_peaks

    data, affine = load_peaks(args.input)
    return check_peaks(data, affine)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def action() -> None:
        result = run(args)
        if args.json:
            print(json.dumps({**result.as_dict(), "file": str(args.input)}))
        else:
            print(f"{args.input}: {result.summary()}")

    return guarded(action, quiet=True, final=argv is None, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
