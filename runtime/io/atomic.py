"""Atomic file writes, the one way: a hidden temporary name beside the target (same file system, same name
ending so the same format), fsync, ``os.replace``; on any failure the temporary is removed and an existing target
is left as it was."""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_target(target: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path to write to; when the block succeeds it is fsynced and renamed over ``target``."""
    final = Path(target)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = final.parent / f".tmp-{secrets.token_hex(6)}-{final.name}"
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    with atomic_target(path) as temporary:
        temporary.write_text(text, encoding="utf-8", newline="")
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_target(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)
