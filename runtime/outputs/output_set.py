"""All-or-nothing outputs: a locked output folder, a hidden staging folder, and one rename per top-level entry.

A run writes every output into ``OUTDIR/.tractseg-aot-staging-<token>/`` (same file system, so renames are atomic)
and moves it into place at the end: one rename for ``bundle_segmentations/`` (or ``endings_segmentations/``), one
per single file. A full disk, SIGINT, SIGTERM or SIGKILL before that leaves no file under a final name; SIGINT and
SIGTERM are held back while the renames run. A staging folder left by a killed run is removed by the next run
on the folder (which holds the lock, so no live run owns it).

The folder is locked for the run with an advisory ``fcntl.flock`` on ``OUTDIR/.tractseg-aot.lock`` (released by
the kernel when the process dies, even by SIGKILL); a second run on it is refused at once, naming the holder's
pid. The lock file is removed at the end; a run that takes the lock checks that the file it locked is still the
one at that path, so removal cannot let two runs in.
"""
from __future__ import annotations

import errno
import fcntl
import os
import secrets
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from runtime.errors import OutputError

LOCK_NAME = ".tractseg-aot.lock"
STAGING_PREFIX = ".tractseg-aot-staging-"
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # EFBIG: a file-size limit (ulimit -f), as full
# every output folder this process committed, in order: an interrupt that arrives after a commit (it is held back
# during the renames, then delivered) must not be reported as "no outputs written" (runtime.cli.guarded)
COMMITTED: list[Path] = []


@contextmanager
def folder_lock(outdir: Path, name: str = LOCK_NAME) -> Iterator[None]:
    """Hold the advisory lock ``name`` of ``outdir`` (created if needed) for the block; OutputError when another
    process holds it."""
    lock_path = outdir / name
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise OutputError(f"{outdir}: cannot create the lock file ({error.strerror or error})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputError(f"{outdir}: in use by another tractseg-aot run (pid {holder}); wait for it or "
                              "choose another output folder") from None
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed the file between our open and our lock: take the new one
    try:
        try:  # the holder's pid, for the message of a refused second run; best effort (a full disk cannot)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        yield
    finally:
        try:
            os.unlink(lock_path)
        except OSError:
            pass
        os.close(fd)


def remove_stale_staging(outdir: Path) -> None:
    """Staging folders of runs that died (call with the folder's lock held)."""
    for stale in outdir.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done (they are delivered after it).

    Python runs signal handlers in the main thread, whichever thread the kernel delivered the signal to, so
    blocking them in this thread (pthread_sigmask) is not enough: a backend's thread pool does not block them,
    and the handler would still raise in the middle of the block. In the main thread the handlers are swapped
    for ones that only note the signal, which is raised again after the block; in another thread no handler
    can interrupt the block (it runs in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)


class StagedOutputs:
    """Outputs staged under ``outdir`` and committed together. ``entries`` are the top-level names the run
    writes (a folder such as ``bundle_segmentations`` or a file such as ``statistics.json``)."""

    def __init__(self, outdir: Path, entries: list[str], force: bool, retired: list[str] = ()):
        self.outdir, self.entries, self.force = outdir, list(dict.fromkeys(entries)), force
        self.retired = [name for name in dict.fromkeys(retired) if name not in self.entries]
        self.staging = outdir / f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"

    def path(self, relative: str | Path) -> Path:
        """Where to write an output whose final place is ``outdir / relative``."""
        return self.staging / relative

    def existing(self) -> list[Path]:
        """Entries already present (an empty folder counts as absent)."""
        found = []
        for name in self.entries:
            target = self.outdir / name
            if target.is_symlink() or (target.exists() and not (target.is_dir() and not any(target.iterdir()))):
                found.append(target)
        return found

    def commit(self) -> list[Path]:
        """Move every staged entry into place (replacing old ones under force) with signals held."""
        missing = [n for n in self.entries if not os.path.lexists(self.staging / n)]
        if missing:
            raise RuntimeError(f"staged outputs incomplete, missing {missing}")
        placed = []
        with signals_held():
            for name in self.entries:  # all checked before the first rename: none or all are placed
                target = self.outdir / name
                if os.path.lexists(target) and not self.force and not (target.is_dir() and not any(target.iterdir())):
                    raise OutputError(f"{target}: appeared during the run; not overwritten (use --force)")
            trash = self.staging / ".replaced"
            trash.mkdir()
            for name in self.entries:
                target = self.outdir / name
                if os.path.lexists(target):
                    os.replace(target, trash / name)
                os.replace(self.staging / name, target)
                placed.append(target)
            for name in self.retired:  # another layout's outputs (--single_output_file switched), under force
                if os.path.lexists(self.outdir / name):
                    os.replace(self.outdir / name, trash / name)
            COMMITTED.append(self.outdir)
            _fsync_dir(self.outdir)
        return placed

    def cleanup(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_foreign_files(existing: list[Path], files: set[Path]) -> None:
    """An existing output folder about to be replaced may hold only files this run writes (and hidden ones)."""
    for entry in existing:
        if entry.is_dir() and not entry.is_symlink():
            for path in sorted(entry.rglob("*")):
                if not path.is_dir() and path not in files and not path.name.startswith("."):
                    raise OutputError(f"{entry}: holds {path.name}, which this run does not write; --force replaces "
                                      "the whole folder, so move that file away or choose another output folder")


@contextmanager
def output_folder(outdir: Path, files: list[Path], force: bool, needed_bytes: int,
                  retired: list[Path] = (), force_hint: str = "use --force") -> Iterator[StagedOutputs]:
    """Lock ``outdir``, clean stale staging, refuse existing outputs unless ``force``, stage, and commit when the
    block succeeds. ``files`` are the final paths of every output (under ``outdir``); each top-level entry that
    holds them is renamed into place as one. Under ``force`` an existing entry is replaced whole, so it is refused
    when it holds files this run does not write (a user's own files are never deleted). Nothing is left under a
    final name on failure; a folder this call created is removed again. A full disk becomes an OutputError naming
    the folder and ``needed_bytes`` (an upper bound of the outputs). ``retired``: files of another layout of the
    same outputs; under ``force`` their top-level entries are removed in the commit (refused like any entry when
    they hold files this run does not know)."""
    entries = list(dict.fromkeys(p.relative_to(outdir).parts[0] for p in files))
    old = list(dict.fromkeys(p.relative_to(outdir).parts[0] for p in retired)) if force else []
    created = [folder for folder in (outdir, *outdir.parents) if not folder.exists()]  # innermost first
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{outdir}: cannot create the output folder ({error.strerror or error})") from None
    staged = StagedOutputs(outdir, entries, force, old)
    try:
        with folder_lock(outdir):
            remove_stale_staging(outdir)
            existing = staged.existing()
            if existing and not force:
                more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
                raise OutputError(f"{existing[0]}{more} already exist(s); {force_hint} to overwrite")
            check_foreign_files(existing + [outdir / n for n in staged.retired if os.path.lexists(outdir / n)],
                                set(files) | set(retired))
            try:
                staged.staging.mkdir()
                yield staged
                staged.commit()
            except OSError as error:
                if error.errno in NO_SPACE:
                    staged.cleanup()  # first, so that the free space reported is what the user has
                    free = shutil.disk_usage(outdir).free
                    what = ("a file-size limit (ulimit -f) was reached" if error.errno == errno.EFBIG
                            else "no space left on the device")
                    raise OutputError(f"{outdir}: {what} while writing the outputs (they need up to "
                                      f"{_size(needed_bytes)}, {_size(free)} free)") from None
                raise
            finally:
                staged.cleanup()
    finally:
        for folder in created:  # only empty ones: a failed first run leaves no folder behind
            try:
                folder.rmdir()
            except OSError:
                break
