"""Who may run on a study's output root at once: the parts of one study, together; never two different studies,
and never the same part twice.

* ``OUTROOT/.tractseg-aot-study-<key>.lock``: held shared (``flock LOCK_SH``) by every running part of the study
  whose key it names (its bundle, the options that shape its outputs and its number of parts). Before running,
  a part looks at the other studies' lock files: one that is held (an exclusive try-lock fails) is a live
  study, and the part is refused naming it; an unheld one is stale and removed.
* ``OUTROOT/.tractseg-aot-part-<K>-of-<N>.lock``: held exclusively by part K for its run (the plain run is part 0
  of 1), so the same part started twice is refused.

Each subject still has exactly one writer: the parts split the subjects (``sorted_by_id[K::N]``) and each subject
folder has its own lock (:mod:`runtime.outputs.output_set`). The kernel releases every flock when a process dies,
even by SIGKILL.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runtime.errors import OutputError
from runtime.outputs.output_set import folder_lock

STUDY_LOCK_PREFIX = ".tractseg-aot-study-"


def study_key(bundle_id: str, shaping: dict[str, Any], num_parts: int) -> str:
    """A short name for what makes a study the same study for its parts."""
    text = json.dumps({"bundle": bundle_id, "options": shaping, "parts": num_parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _holder(fd: int) -> str:
    return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"


def _refuse_other_studies(outroot: Path, own: Path) -> None:
    for other in sorted(outroot.glob(f"{STUDY_LOCK_PREFIX}*.lock")):
        if other == own:
            continue
        try:
            fd = os.open(other, os.O_RDWR)
        except OSError:
            continue  # removed meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise OutputError(f"{outroot}: in use by another tractseg-aot study (pid {_holder(fd)}) with other "
                              "options, bundle or number of parts; wait for it or choose another output folder") \
                from None
        else:
            try:
                os.unlink(other)  # a study that ended (or died): its lock file is stale
            except OSError:
                pass
        finally:
            os.close(fd)


@contextmanager
def _shared_lock(path: Path) -> Iterator[int]:
    """Hold ``path`` with a shared flock, making sure it is still the file at that path once locked."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if os.path.exists(path) and os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except OSError:
            pass
        os.close(fd)  # removed as stale by another study between our open and our lock: take a new one
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def study_lock(outroot: Path, key: str, num_parts: int, part_id: int) -> Iterator[None]:
    """Hold the locks of part ``part_id`` of the study ``key`` on ``outroot`` for the block (module docstring);
    OutputError (one line) when another study or the same part runs there."""
    own = outroot / f"{STUDY_LOCK_PREFIX}{key}.lock"
    try:
        with folder_lock(outroot, f".tractseg-aot-part-{part_id}-of-{num_parts}.lock"):
            with _shared_lock(own) as fd:
                try:
                    os.pwrite(fd, f"{os.getpid()}\n".encode().ljust(16), 0)
                except OSError:
                    pass
                _refuse_other_studies(outroot, own)
                yield
    except OSError as error:
        raise OutputError(f"{outroot}: cannot lock the study folder ({error.strerror or error})") from None
