"""The runtime's error types: each carries one line for the user ("<file>: <what is wrong>"). Anything else that
escapes is a bug in our code, and ``main`` says so ("internal error, please report")."""
from __future__ import annotations


class TractSegError(RuntimeError):
    """Base of every error a user can fix; the message is one line."""


class InputError(TractSegError, ValueError):
    """The input peak image cannot be used; the message names the file."""


class ArtifactError(TractSegError):
    """A bundle that cannot be used: missing, tampered, invalid, or not what was asked for."""


class BackendError(TractSegError):
    """A backend that is missing, cannot use the requested device, or fails to load or run."""


class OutputError(TractSegError):
    """An output location that cannot be used (not writable, in use, full, or would overwrite an input)."""


class MissingExtraError(TractSegError):
    """A feature whose optional dependencies (an extra: qc, cohort, a backend) are not installed."""


def one_line(error: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, shortened to ``limit`` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."
