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


def save_onnx(fn: Callable, spec: jax.ShapeDtypeStruct, out_dir: Path) -> list[str]:
    import onnx
    from jax2onnx import to_onnx

    traced = out_dir / "traced" / ONNX_FILE
    traced.parent.mkdir()
    to_onnx(fn, [spec], model_name="tractseg", opset=ONNX_OPSET, return_mode="file", output_path=str(traced),
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
    model = onnx.load(str(traced), load_external_data=True)
    path = out_dir / ONNX_FILE
    onnx.save_model(model, str(path), save_as_external_data=False)
    for leftover in traced.parent.iterdir():
        leftover.unlink()
    traced.parent.rmdir()
    onnx.checker.check_model(str(path))
    return [ONNX_FILE]
