"""Running a case: in this process through ``runtime.run.main`` (file descriptors 1 and 2 captured), or in a
subprocess (signals, ``ulimit``); and snapshots of a case's folder to tell what a run wrote."""
from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from tests.fuzz.common import REPO, STAGING_PREFIX, TIMEOUT_S, Case, CaseTimeout


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (symbolic links not followed): kind, size, mtime (not for folders: the
    writability probe creates and removes a file in an output folder, which touches the folder's mtime)."""
    found = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            path = Path(folder) / name
            try:
                info = path.lstat()
            except OSError:
                continue
            folder_entry = stat.S_ISDIR(info.st_mode)
            found[str(path.relative_to(root))] = (info.st_mode >> 12, 0 if folder_entry else info.st_size,
                                                  0 if folder_entry else info.st_mtime_ns)
    return found


@contextlib.contextmanager
def captured_fds() -> tuple[Path, Path]:
    """File descriptors 1 and 2 and sys.stdout / sys.stderr into two files (a backend's C++ logging included)."""
    folder = Path(tempfile.mkdtemp(prefix="tractseg-aot-fuzz-io-"))
    out_path, err_path = folder / "out", folder / "err"
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    streams = sys.stdout, sys.stderr
    out_file = open(out_path, "a", buffering=1)
    err_file = open(err_path, "a", buffering=1)
    nibabel_handlers = [h for h in logging.getLogger("nibabel.global").handlers if isinstance(h, logging.StreamHandler)]
    nibabel_streams = [h.stream for h in nibabel_handlers]
    try:
        os.dup2(out_file.fileno(), 1)
        os.dup2(err_file.fileno(), 2)
        sys.stdout, sys.stderr = out_file, err_file
        for h in nibabel_handlers:
            h.setStream(err_file)
        with warnings.catch_warnings():
            # the interpreter's default filters (what `python -m runtime.run` runs with), each warning every time
            warnings.resetwarnings()
            warnings.simplefilter("always")
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", category)
            warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: err_file.write(
                warnings.formatwarning(message, category, filename, lineno, line))
            yield out_path, err_path
    finally:
        out_file.flush()
        err_file.flush()
        sys.stdout, sys.stderr = streams
        for h, stream in zip(nibabel_handlers, nibabel_streams):
            h.setStream(stream)
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        out_file.close()
        err_file.close()
        shutil.rmtree(folder, ignore_errors=True)


def _alarm(signum, frame):
    raise CaseTimeout()


def run_in_process(case: Case) -> tuple[int | None, str, str]:
    from runtime.run import main

    code: int | None
    with captured_fds() as (out_path, err_path):
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, TIMEOUT_S)
        try:
            code = main(case.argv)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 2
        except CaseTimeout:
            code = None
        except BaseException:  # an exception main let through is a violation: record its traceback
            import traceback

            sys.stderr.write(traceback.format_exc())
            code = -1000
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        sys.stdout.flush()
        sys.stderr.flush()
        out, err = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    return code, out, err


def command(case: Case) -> list[str]:
    cli = [sys.executable, "-m", "runtime.run", *case.argv]
    if case.ulimit_kb:
        return ["bash", "-c", f"ulimit -v {case.ulimit_kb}; exec {shlex.join(cli)}"]
    return cli


def run_subprocess(case: Case) -> tuple[int | None, str, str]:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"} if case.ulimit_kb else None
    process = subprocess.Popen(command(case), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, errors="replace", env=env)
    if case.mode == "signal":
        deadline = time.monotonic() + TIMEOUT_S
        while process.poll() is None and not list(case.outdir.glob(f"{STAGING_PREFIX}*")):
            if time.monotonic() > deadline:
                break
            time.sleep(0.005)
        time.sleep(case.delay_s)
        if process.poll() is None:
            process.send_signal(case.signal)
    try:
        out, err = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        return None, out, err
    return process.returncode, out, err
