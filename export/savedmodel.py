"""TensorFlow SavedModel via jax2tf native serialisation (one XlaCallModule op, for cpu and cuda).

The graph is a single XlaCallModule op, so tf2onnx and OpenVINO cannot convert it: ONNX is traced directly
with jax2onnx instead (export/onnx_model.py).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax

from runtime.manifest import INPUT_NAME

SAVEDMODEL_DIR = "saved_model"


def save_savedmodel(fn: Callable, spec: jax.ShapeDtypeStruct, out_dir: Path,
                    platforms: tuple[str, ...]) -> list[str]:
    """Write out_dir/saved_model; returns the files in it, relative to out_dir."""
    import tensorflow as tf
    from jax.experimental import jax2tf

    converted = jax2tf.convert(fn, native_serialization_platforms=platforms, with_gradient=False)
    module = tf.Module()
    module.f = tf.function(converted, autograph=False,
                           input_signature=[tf.TensorSpec(spec.shape, tf.float32, name=INPUT_NAME)])
    target = out_dir / SAVEDMODEL_DIR
    tf.saved_model.save(module, str(target), signatures=module.f.get_concrete_function())
    return sorted(str(p.relative_to(out_dir)) for p in target.rglob("*") if p.is_file())
