"""Checks made before the network runs, so that a bad bundle or output location writes nothing.

* :func:`find_manifest` (:func:`resolve_bundle_dir` + :func:`open_manifest`): which bundle serves the request, and that it is the right one
  (task, tract definition, class count and bundle names); artifact checksums are verified when the backend
  opens it (:func:`runtime.network.backends.open_backend`).
* :func:`check_outputs`: the output locations are folders we can write to, no output exists unless ``--force``,
  and the report is neither the input nor one of the outputs.
* :func:`cap_threads`: a thread count the machine has.
"""
from __future__ import annotations

import errno
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from runtime.models.bundles import Model
from runtime.errors import ArtifactError, OutputError
from runtime.host import available_cores
from runtime.models.manifest import MANIFEST_NAME, Manifest, load_manifest

ARTIFACTS_ENV = "TRACTSEG_AOT_ARTIFACTS"
log = logging.getLogger("tractseg_aot")


def bundle_cache_root() -> Path:
    """The per-user folder of built bundles: ``$XDG_CACHE_HOME/tractseg-aot`` (default ``~/.cache/tractseg-aot``);
    ``python -m export`` writes there by default."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "tractseg-aot"


def resolve_bundle_dir(option: str | os.PathLike[str] | None, model: Model) -> Path:
    """--artifacts DIR; else $TRACTSEG_AOT_ARTIFACTS (a bundle dir, or a folder of <model name>/ bundles);
    else the per-user cache folder's <model name>/ (never the installed package's own folder)."""
    if option is not None:
        if not str(option):
            raise ArtifactError("--artifacts: empty path")
        return Path(option)
    env = os.environ.get(ARTIFACTS_ENV)
    if env:
        root = Path(env)
        return root if (root / MANIFEST_NAME).is_file() else root / model.name
    return bundle_cache_root() / model.name


def open_manifest(bundle_dir: Path, model: Model) -> Manifest:
    """The bundle's manifest, refused unless it is the requested model."""
    if not (bundle_dir / MANIFEST_NAME).is_file():
        xtract = " --tract_definition xtract" if model.tract_definition == "xtract" else ""
        raise ArtifactError(f"no bundle for {model.name} at {bundle_dir} (no {MANIFEST_NAME}); build it with "
                            f"`python -m export --task {model.task}{xtract} --download --out {bundle_dir}` "
                            f"(needs the [export] extra), or `tractseg-aot-download --task {model.task}{xtract}` "
                            f"(no JAX), or pass --artifacts DIR (the demo's bundle: artifacts/{model.name})")
    manifest = load_manifest(bundle_dir)
    manifest.check_request(model.task, model.tract_definition, model.n_classes)
    if manifest.bundles != model.bundles:
        raise ArtifactError(f"{bundle_dir / MANIFEST_NAME}: bundle names differ from upstream's "
                            f"{model.task}/{model.tract_definition} list")
    return manifest


def find_manifest(artifacts: str | os.PathLike[str] | None, model: Model) -> Manifest:
    """The manifest of the bundle that serves ``model`` (``artifacts``: --artifacts DIR, else the defaults of
    :func:`resolve_bundle_dir`), checked to be that model: every caller's one way to a bundle."""
    return open_manifest(resolve_bundle_dir(artifacts, model), model)


def warn_if_demo(manifest: Manifest) -> None:
    """The one warning for a bundle built from demo (random) weights."""
    if manifest.demo_weights:
        log.warning("demo weights, not anatomical (%s): the outputs are not tract segmentations",
                    manifest.weights.source)


def cap_threads(requested: int | None) -> int | None:
    """``requested`` threads, capped (with a warning) at the cores this process may run on."""
    cores = available_cores()
    if requested is not None and requested > cores:
        log.warning("--nr_cpus %d capped to the %d core(s) available", requested, cores)
        return cores
    return requested


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor or ".")


def check_writable_dir(directory: Path) -> None:
    """``directory`` is, or can be created as, a folder we can write to (probed with a temporary file)."""
    try:
        os.stat(directory)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise OutputError(f"{directory}: symbolic link loop") from None
        if error.errno not in (errno.ENOENT, errno.ENOTDIR):  # e.g. a name too long
            raise OutputError(f"{directory}: cannot be used ({error.strerror or error})") from None
    existing = _nearest_existing(directory)
    if not existing.is_dir():
        if existing == directory:
            raise OutputError(f"{directory}: exists and is not a directory")
        raise OutputError(f"{directory}: cannot be created, {existing} is not a directory")
    try:
        handle, probe = tempfile.mkstemp(prefix=".tractseg-aot-probe-", dir=existing)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        reason = "files cannot be created there" if error.errno == errno.ENOENT else (error.strerror or str(error))
        raise OutputError(f"{directory}: not writable ({reason})") from None


def _resolved(path: Path) -> Path:
    """``path`` with symbolic links resolved as far as they go (a link loop stays as it is: pathlib's resolve
    raises RuntimeError for one on Python 3.11, os.path.realpath does not)."""
    return Path(os.path.realpath(path))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return _resolved(a) == _resolved(b) or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_outputs(files: Sequence[Path], force: bool, report: Path | None = None,
                  inputs: Sequence[Path] = (), force_hint: str = "use --force") -> None:
    """Every output's folder is writable, no output exists (or ``force``: it will be replaced), and neither the
    report nor any output is an input (the report is no output either)."""
    for path in [*files, *([report] if report else [])]:
        for given in inputs:
            if _same_file(path, given):
                raise OutputError(f"{path}: is the input {given}; it would be overwritten")
    if report is not None:
        for f in files:
            if _same_file(report, f) or _resolved(report) in _resolved(f).parents:
                raise OutputError(f"--report {report}: is one of the outputs ({f})")
    for folder in dict.fromkeys(f.parent for f in files):
        check_writable_dir(folder)
    if report is not None:
        try:
            check_writable_dir(report.parent)
        except OutputError as error:
            raise OutputError(f"--report {report}: {error}") from None
    for path in [*files, *([report] if report else [])]:
        try:
            os.lstat(path)
        except OSError as error:
            if error.errno != errno.ENOENT:  # e.g. a file name too long
                raise OutputError(f"{path}: cannot be written ({error.strerror or error})") from None
    existing = [f for f in [*files, *([report] if report else [])] if f.exists() or f.is_symlink()]
    for f in existing:
        if f.is_dir():
            raise OutputError(f"{f}: is a directory, cannot write an output file there")
    if existing and not force:
        more = f" and {len(existing) - 1} more output(s)" if len(existing) > 1 else ""
        raise OutputError(f"{existing[0]}{more} already exist(s); {force_hint} to overwrite")
