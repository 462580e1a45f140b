"""The command lines' contract, shared by every command (``runtime.run`` and each package's ``__main__``):
logging to stdout/stderr with the program's prefix, and :func:`guarded`, which turns every outcome into one line
and an exit status (0; 1 a problem the user can fix; 3 a bug, with the traceback saved to a file; 130 / 143
SIGINT / SIGTERM). The flags are declared once, in argument groups (:mod:`runtime.cli.arguments`), and become
typed options in one place (:mod:`runtime.cli.options`). Only command-line modules import this package."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from runtime.errors import TractSegError, one_line
from runtime.host import PROG, save_traceback
from runtime.outputs.output_set import COMMITTED

log = logging.getLogger("tractseg_aot")


def path_arg(text: str) -> str:
    """argparse type of every path option: an empty path is a usage error."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path")
    return text


def command_parser(script: str, module: str, doc: str | None) -> argparse.ArgumentParser:
    """A command's parser, named by how it was started (the console ``script`` or ``python -m module``); its
    description is the docstring's first paragraph."""
    prog = script if os.path.basename(sys.argv[0]) == script else f"python -m {module}"
    first = " ".join((doc or "").strip().split("\n\n")[0].split())
    return argparse.ArgumentParser(prog=prog, description=first)


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that staging folders are cleaned like on SIGINT."""


def configure_logging(quiet: bool, prog: str = PROG) -> None:
    """Info lines on stdout, warnings on stderr (errors are printed by :func:`guarded`), prefixed ``prog:``."""
    info, warnings = logging.StreamHandler(sys.stdout), logging.StreamHandler(sys.stderr)
    info.addFilter(lambda record: record.levelno < logging.WARNING)
    warnings.setLevel(logging.WARNING)
    for handler in (info, warnings):
        handler.setFormatter(_Formatter(prog))
    log.handlers[:] = [info, warnings]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


class _Formatter(logging.Formatter):
    """Info lines as "tractseg-aot: message", warnings as "tractseg-aot: warning: message"."""

    def __init__(self, prog: str):
        super().__init__()
        self.prog = prog

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno <= logging.INFO else f"{record.levelname.lower()}: "
        return f"{self.prog}: {level}{record.getMessage()}"


def guarded(action, quiet: bool = False, final: bool = False, prog: str = PROG) -> int:
    """Run ``action()`` with the CLI's contract: one line and exit 1 for a user error, 130 / 143 for SIGINT /
    SIGTERM, 3 and a saved traceback for a bug.

    Once the outcome is settled (the action returned, or its exception was caught) a signal changes nothing: the
    handlers then return quietly, so a SIGINT that arrived during a backend's C++ teardown and is handled at the
    next bytecode cannot raise KeyboardInterrupt out of here (a traceback). ``final``: the process exits next
    (the command line), so SIGINT and SIGTERM are then ignored rather than handed back: Python restores the
    default handlers while it shuts down, and a late signal (the backend's threads do not block it) would kill
    the exit with status -2 / -15. ``prog``: the prefix of every line (the command's name)."""
    configure_logging(quiet, prog)
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
        print(f"{prog}: error: {one_line(error, 1000)}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        settled = True
        print(f"{prog}: interrupted, {_written_since(committed_before)}", file=sys.stderr, flush=True)
        return 130
    except Terminated:
        settled = True
        print(f"{prog}: terminated, {_written_since(committed_before)}", file=sys.stderr, flush=True)
        return 143
    except MemoryError:
        settled = True
        print(f"{prog}: error: out of memory", file=sys.stderr, flush=True)
        return 1
    except Exception as error:
        settled = True
        where = save_traceback()
        print(f"{prog}: internal error, please report: {type(error).__name__}: {one_line(error, 300)} "
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
