"""jax.export serialisation and the StableHLO bytecode on its own, per platform.

The .jaxexport file (platforms cpu and cuda in one) needs JAX to load; the .mlirbc files are plain StableHLO
portable-artifact bytecode, one single-platform module each (a multi-platform module would take an extra
platform-index argument), the input of the IREE compiler.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax

JAX_EXPORT_FILE = "model.jaxexport"


def stablehlo_file(platform: str) -> str:
    return f"model.{platform}.mlirbc"


def export_jax(fn: Callable, spec: jax.ShapeDtypeStruct, out_dir: Path, platforms: tuple[str, ...]) -> list[str]:
    """Write model.jaxexport (all platforms) and model.<platform>.mlirbc; returns the file names written."""
    exported = jax.export.export(fn, platforms=platforms)(spec)
    (out_dir / JAX_EXPORT_FILE).write_bytes(exported.serialize())
    written = [JAX_EXPORT_FILE]
    for platform in platforms:
        single = jax.export.export(fn, platforms=(platform,))(spec)
        (out_dir / stablehlo_file(platform)).write_bytes(single.mlir_module_serialized)
        written.append(stablehlo_file(platform))
    return written


def module_name(fn: Callable) -> str:
    """The name jax gives the exported module (IREE exposes its functions under it)."""
    return f"jit_{fn.__name__}"
