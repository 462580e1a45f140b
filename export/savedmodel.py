"""TensorFlow SavedModel via jax2tf native serialisation (one XlaCallModule op, for cpu and cuda).

The weights are passed in as tf.Variables, so they are stored once under variables/ instead of as constants
inside the serialised module (which doubled the file to ~296 MB with two platforms). The graph is a single
XlaCallModule op, so tf2onnx and OpenVINO cannot convert it: ONNX is traced directly with jax2onnx instead.
"""
from __future__ import annotations

from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from export.model import TractSeg, slice_probabilities
from runtime.models.manifest import INPUT_NAME

SAVEDMODEL_DIR = "saved_model"


def save_savedmodel(network: TractSeg, spec: jax.ShapeDtypeStruct, out_dir: Path,
                    platforms: tuple[str, ...]) -> list[str]:
    """Write out_dir/saved_model; returns the files in it, relative to out_dir."""
    import tensorflow as tf
    from jax.experimental import jax2tf

    params, static = eqx.partition(network, eqx.is_array)
    leaves, treedef = jax.tree_util.tree_flatten(params)

    def probabilities(weights: list[jax.Array], slices: jax.Array) -> jax.Array:
        return slice_probabilities(eqx.combine(jax.tree_util.tree_unflatten(treedef, weights), static), slices)

    converted = jax2tf.convert(probabilities, native_serialization_platforms=platforms, with_gradient=False)
    module = tf.Module()
    module.weights = [tf.Variable(np.asarray(leaf), trainable=False) for leaf in leaves]
    module.f = tf.function(lambda slices: converted(module.weights, slices), autograph=False,
                           input_signature=[tf.TensorSpec(spec.shape, tf.float32, name=INPUT_NAME)])
    target = out_dir / SAVEDMODEL_DIR
    tf.saved_model.save(module, str(target), signatures=module.f.get_concrete_function())
    return sorted(str(p.relative_to(out_dir)) for p in target.rglob("*") if p.is_file())
