"""jax.export serialisation and the StableHLO bytecode on its own.

The .jaxexport file (platforms cpu and cuda in one) needs JAX to load. The .mlirbc files are plain StableHLO
portable-artifact bytecode of single-platform modules (a multi-platform module takes an extra platform-index
argument), the input of the IREE compiler. When the per-platform modules are byte-identical (they are for this
network) one file serves all platforms.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax

JAX_EXPORT_FILE = "model.jaxexport"


def export_jax(fn: Callable, spec: jax.ShapeDtypeStruct, out_dir: Path,
               platforms: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Write model.jaxexport and the StableHLO bytecode; returns {mlirbc file: platforms it serves}."""
    exported = jax.export.export(fn, platforms=platforms)(spec)
    (out_dir / JAX_EXPORT_FILE).write_bytes(exported.serialize())
    modules: dict[bytes, list[str]] = {}
    for platform in platforms:
        module = jax.export.export(fn, platforms=(platform,))(spec).mlir_module_serialized
        modules.setdefault(module, []).append(platform)
    files = {}
    for module, served in modules.items():
        name = "model.mlirbc" if len(modules) == 1 else f"model.{served[0]}.mlirbc"
        (out_dir / name).write_bytes(module)
        files[name] = tuple(served)
    return files


def module_name(fn: Callable) -> str:
    """The name jax gives the exported module (IREE exposes its functions under it)."""
    return f"jit_{fn.__name__}"
