"""ONNX traced directly from the JAX function with jax2onnx (the jax2tf -> tf2onnx route is dead).

jax2onnx writes large initialisers as external data; the weights (~148 MB) are well under protobuf's 2 GB, so
they are folded back into one self-contained model.onnx: one file to checksum and ship.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax

from runtime.models.manifest import INPUT_NAME, OUTPUT_NAME

ONNX_FILE = "model.onnx"
ONNX_OPSET = 17


def save_onnx(fn: Callable, spec: jax.ShapeDtypeStruct, out_dir: Path, name: str = ONNX_FILE,
              more: tuple[tuple[str, jax.ShapeDtypeStruct], ...] = ()) -> list[str]:
    """Trace ``fn`` to ``out_dir/name``, one self-contained file; ``more``: further (input name, spec) after the
    slices (the dropout model's mask)."""
    import onnx
    from jax2onnx import to_onnx

    traced = out_dir / "traced" / name
    traced.parent.mkdir()
    to_onnx(fn, [spec, *(s for _, s in more)], model_name="tractseg", opset=ONNX_OPSET, return_mode="file",
            output_path=str(traced), input_names=[INPUT_NAME, *(n for n, _ in more)], output_names=[OUTPUT_NAME])
    model = onnx.load(str(traced), load_external_data=True)
    path = out_dir / name
    onnx.save_model(model, str(path), save_as_external_data=False)
    for leftover in traced.parent.iterdir():
        leftover.unlink()
    traced.parent.rmdir()
    onnx.checker.check_model(str(path))
    return [name]
