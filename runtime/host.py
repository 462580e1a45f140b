"""This process and its host: the program's name, package versions, peak memory, the cores it may use, the crash
file of an internal error, and the optional extras (one line naming the extra when it is missing). A leaf: it
imports nothing of the runtime but :mod:`runtime.errors`, so every layer may use it."""
from __future__ import annotations

import logging
import os
import platform
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from runtime.errors import MissingExtraError

PROG = "tractseg-aot"
PACKAGES = ("tractseg-aot", "numpy", "scipy", "nibabel", "tqdm")
DIPY_MISSING = {
    "tracking": "dipy is not installed; tracking and tractometry need it: pip install 'tractseg-aot[tracking]'",
    "diffusion": "engine 'dipy' needs dipy: pip install 'tractseg-aot[diffusion]'",
    "orientation": "the b-vector check needs dipy (the 'diffusion' extra): pip install 'tractseg-aot[diffusion]'",
    "preprocess": "--preprocess needs dipy (the 'diffusion' extra): pip install 'tractseg-aot[diffusion]'",
    "super_resolution": "--super_resolution needs dipy (the 'diffusion' extra): pip install 'tractseg-aot[diffusion]'",
    "calc_FA": "calc_FA needs dipy (the 'diffusion' extra): pip install 'tractseg-aot[diffusion]'",
}


def package_versions(packages: Sequence[str] = PACKAGES, missing: str | None = "not installed") -> dict[str, str]:
    """Python's version and each package's (the run report, the export manifest and the benchmarks all use this
    one); a package that is not installed is recorded as ``missing``, or left out when ``missing`` is None."""
    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            if missing is not None:
                found[name] = missing
    return found


def tool_version() -> str:
    """tractseg-aot's own version ("unknown" when run from a checkout that was never installed)."""
    return package_versions(("tractseg-aot",), missing="unknown")["tractseg-aot"]


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    Linux: VmHWM from /proc/self/status. ru_maxrss is not used there: Linux carries it over fork + exec, so a
    CLI started by a 2 GB parent reported the parent's peak (measured: 1934 MB for a 13 MB child).
    """
    try:
        with open("/proc/self/status") as status:
            lines = status.read().splitlines()
        for line in lines:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1 << 20 if sys.platform == "darwin" else 1 << 10), 1)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a cluster job's allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def save_traceback() -> str:
    """Write the current exception's traceback to a file for the bug report; returns where."""
    handle, path = tempfile.mkstemp(prefix=f"{PROG}-crash-{time.strftime('%Y%m%dT%H%M%S')}-", suffix=".txt")
    with os.fdopen(handle, "w") as f:
        f.write(f"{PROG} {' '.join(sys.argv)}\n{package_versions()}\n\n{traceback.format_exc()}")
    return path


def require_dipy(feature: str = "tracking") -> None:
    """Raise :class:`MissingExtraError` (one line naming the feature's extra, :data:`DIPY_MISSING`) when dipy
    cannot be imported."""
    try:
        import dipy  # noqa: F401
    except ImportError:
        raise MissingExtraError(DIPY_MISSING[feature]) from None


class CollectLines(logging.Handler):
    """A logging handler that keeps each record's message as one line (``lines``) instead of printing it: the
    study runner's per-subject warnings, nibabel's header fixes."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(" ".join(record.getMessage().split()))
