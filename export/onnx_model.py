"""ONNX traced directly from the JAX function with jax2onnx (the jax2tf -> tf2onnx route is dead)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax

from runtime.manifest import INPUT_NAME, OUTPUT_NAME

ONNX_FILE = "model.onnx"
ONNX_OPSET = 17


def save_onnx(fn: Callable, spec: jax.ShapeDtypeStruct, out_dir: Path) -> list[str]:
    from jax2onnx import to_onnx

    import onnx

    path = out_dir / ONNX_FILE
    to_onnx(fn, [spec], model_name="tractseg", opset=ONNX_OPSET, return_mode="file", output_path=str(path),
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
    onnx.checker.check_model(str(path))
    return [ONNX_FILE]
