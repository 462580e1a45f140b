"""The command line's contract, shared by runtime.run and runtime.cohort: the run options they share and their
one mapping to :class:`runtime.options.RunOptions` (:func:`run_options`: argparse stops here), logging to
stdout/stderr with the program's prefix, and :func:`guarded`, which turns every outcome into one line and an exit
status (0; 1 a problem the user can fix; 3 a bug, with the traceback saved to a file; 130 / 143 SIGINT /
SIGTERM)."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import time
import traceback

from runtime.errors import TractSegError, one_line
from runtime.models.bundles import TASKS, TRACT_DEFINITIONS
from runtime.models.manifest_schema import PRECISIONS
from runtime.network.backends import BACKENDS
from runtime.options import RunOptions
from runtime.outputs.output_set import COMMITTED
from runtime.qc.report import package_versions
from runtime.subject import PROG
log = logging.getLogger("tractseg_aot")


def path_arg(text: str) -> str:
    """argparse type of every path option: an empty path is a usage error."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path")
    return text


def command_parser(script: str, module: str, doc: str | None) -> argparse.ArgumentParser:
    """A command's parser, named by how it was started (the console ``script`` or ``python -m module``)."""
    prog = script if os.path.basename(sys.argv[0]) == script else f"python -m {module}"
    return argparse.ArgumentParser(prog=prog, description=(doc or "").strip().splitlines()[0])


def add_peaks_arguments(p: argparse.ArgumentParser) -> None:
    """PEAKS and -o OUTDIR, as upstream's TractSeg takes them."""
    p.add_argument("peaks", metavar="PEAKS", type=path_arg, help="MRtrix peaks: 4D NIfTI (X, Y, Z, 9)")
    p.add_argument("-o", dest="output", metavar="OUTDIR", type=path_arg,
                   help="output directory (default: <directory of PEAKS>/tractseg_output)")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The options runtime.run and runtime.cohort share (upstream's, plus the runtime's own)."""
    p.add_argument("--artifacts", metavar="DIR", type=path_arg, help="bundle directory with manifest.json "
                   "(default: $TRACTSEG_AOT_ARTIFACTS[/<model>], else ~/.cache/tractseg-aot/<model>)")
    p.add_argument("--output_type", choices=TASKS, default="tract_segmentation")
    p.add_argument("--tract_definition", choices=TRACT_DEFINITIONS, default="TractQuerier+")
    p.add_argument("--single_output_file", action="store_true", help="all bundles in one 4D image (not for TOM)")
    p.add_argument("--tract_segmentations_path", metavar="DIR", type=path_arg,
                   help="TOM: the bundle masks (default: <output>/bundle_segmentations, from a tract_segmentation "
                        "run)")
    p.add_argument("--rescale_dm", action="store_true",
                   help="dm_regression: min-max scale the density maps over all bundles, as upstream (whose "
                        "range(0, 100) gives [0, 1])")
    p.add_argument("--flip", action="store_true",
                   help="accepted for upstream's command lines and, as upstream 2.10 does, not applied (its "
                        "Config.FLIP_OUTPUT_PEAKS is never read): TOMs are written unchanged")
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
    g = p.add_argument_group("raw diffusion input (upstream's --raw_diffusion_input; runtime.diffusion)")
    g.add_argument("--raw_diffusion_input", action="store_true",
                   help="the input is a DWI series: compute the peaks first (MRtrix CSD as upstream, or dipy)")
    g.add_argument("--bvals", metavar="FILE", type=path_arg, help="default: <input name>.bvals beside the input")
    g.add_argument("--bvecs", metavar="FILE", type=path_arg, help="default: <input name>.bvecs beside the input")
    g.add_argument("--brain_mask", metavar="FILE", type=path_arg,
                   help="default: nodif_brain_mask.nii.gz beside the input, else the engine makes one")
    g.add_argument("--csd_type", choices=("csd", "csd_msmt", "csd_msmt_5tt"), default="csd")
    g.add_argument("--keep_intermediate_files", action="store_true", help="keep the FODs, response, ...")
    g.add_argument("--peaks-engine", dest="peaks_engine", choices=("auto", "mrtrix", "dipy"), default="auto",
                   help="auto: MRtrix when dwi2fod is on PATH, else dipy (the [diffusion] extra)")
    p.add_argument("--force", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bars or info lines")


def run_options(p: argparse.ArgumentParser, args: argparse.Namespace) -> RunOptions:
    """The parsed run options as :class:`RunOptions` (usage errors through ``p``): the one place a Namespace
    becomes options."""
    if args.nr_cpus == 0 or args.nr_cpus < -1:
        p.error(f"--nr_cpus must be -1 or a positive number, not {args.nr_cpus}")
    if args.output_type == "endings_segmentation" and args.tract_definition == "xtract":
        p.error("--tract_definition xtract only works with --output_type tract_segmentation (as upstream)")
    if args.output_type == "TOM" and args.tract_definition == "xtract":
        p.error("--tract_definition xtract does not work with --output_type TOM (as upstream)")
    options = dict(artifacts=args.artifacts, output_type=args.output_type, tract_definition=args.tract_definition,
                   single_output_file=args.single_output_file, get_probabilities=args.get_probabilities,
                   postprocess=not args.no_postprocess, backend=args.backend, device=args.device,
                   precision=args.precision, self_check=args.self_check,
                   threads=None if args.nr_cpus == -1 else args.nr_cpus, statistics=args.statistics,
                   preview=args.preview, force=args.force, quiet=args.quiet,
                   tract_segmentations_path=args.tract_segmentations_path,
                   raw_diffusion_input=args.raw_diffusion_input, bvals=args.bvals, bvecs=args.bvecs,
                   brain_mask=args.brain_mask, csd_type=args.csd_type,
                   keep_intermediate_files=args.keep_intermediate_files, peaks_engine=args.peaks_engine,
                   rescale_dm=args.rescale_dm)
    try:
        return RunOptions(**options)
    except ValueError as error:
        p.error(str(error))


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that staging folders are cleaned like on SIGINT."""


def configure_logging(quiet: bool) -> None:
    """Info lines on stdout, warnings on stderr (errors are printed by :func:`guarded`)."""
    info, warnings = logging.StreamHandler(sys.stdout), logging.StreamHandler(sys.stderr)
    info.addFilter(lambda record: record.levelno < logging.WARNING)
    warnings.setLevel(logging.WARNING)
    for handler in (info, warnings):
        handler.setFormatter(_Formatter())
    log.handlers[:] = [info, warnings]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


class _Formatter(logging.Formatter):
    """Info lines as "tractseg-aot: message", warnings as "tractseg-aot: warning: message"."""

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno <= logging.INFO else f"{record.levelname.lower()}: "
        return f"{PROG}: {level}{record.getMessage()}"


def save_traceback() -> str:
    """Write the current exception's traceback to a file for the bug report; returns where."""
    handle, path = tempfile.mkstemp(prefix=f"{PROG}-crash-{time.strftime('%Y%m%dT%H%M%S')}-", suffix=".txt")
    with os.fdopen(handle, "w") as f:
        f.write(f"{PROG} {' '.join(sys.argv)}\n{package_versions()}\n\n{traceback.format_exc()}")
    return path


def guarded(action, quiet: bool = False, final: bool = False) -> int:
    """Run ``action()`` with the CLI's contract: one line and exit 1 for a user error, 130 / 143 for SIGINT /
    SIGTERM, 3 and a saved traceback for a bug.

    Once the outcome is settled (the action returned, or its exception was caught) a signal changes nothing: the
    handlers then return quietly, so a SIGINT that arrived during a backend's C++ teardown and is handled at the
    next bytecode cannot raise KeyboardInterrupt out of here (a traceback). ``final``: the process exits next
    (the command line), so SIGINT and SIGTERM are then ignored rather than handed back: Python restores the
    default handlers while it shuts down, and a late signal (the backend's threads do not block it) would kill
    the exit with status -2 / -15."""
    configure_logging(quiet)
    settled = False

    def on_signal(signum: int, frame) -> None:
        if not settled:
            raise KeyboardInterrupt() if signum == signal.SIGINT else Terminated()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    committed_before = len(COMMITTED)
    try:
        action()
        settled = True
    except TractSegError as error:
        settled = True
        print(f"{PROG}: error: {one_line(error, 1000)}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        settled = True
        print(f"{PROG}: interrupted, {_written_since(committed_before)}", file=sys.stderr, flush=True)
        return 130
    except Terminated:
        settled = True
        print(f"{PROG}: terminated, {_written_since(committed_before)}", file=sys.stderr, flush=True)
        return 143
    except MemoryError:
        settled = True
        print(f"{PROG}: error: out of memory", file=sys.stderr, flush=True)
        return 1
    except Exception as error:
        settled = True
        where = save_traceback()
        print(f"{PROG}: internal error, please report: {type(error).__name__}: {one_line(error, 300)} "
              f"(traceback saved to {where})", file=sys.stderr, flush=True)
        return 3
    finally:
        settled = True  # (an exception none of the above catch, e.g. SystemExit, goes on unchanged)
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_IGN if final else handler if handler is not None else signal.SIG_DFL)
    return 0


def _written_since(committed_before: int) -> str:
    """What an interrupted run leaves: nothing, or the output sets committed before the signal came (a signal
    held back during the final renames is delivered just after them)."""
    done = COMMITTED[committed_before:]
    if not done:
        return "no outputs written"
    return f"after the outputs under {done[-1]} were written" + (f" ({len(done)} output folders)" if len(done) > 1
                                                                  else "")
