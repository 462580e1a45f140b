"""The dropout model of ``--uncertainty``: the network with pool_4 multiplied by a second input, the mask that the
runtime draws (:mod:`runtime.network.dropout`), as one more ONNX file of a tract_segmentation bundle.

It is verified like every artifact, against the live model on the export's check batches: with a mask of ones
(dropout off: the plain network's outputs) and with two drawn masks (the live model given the same masks), each
within the bundle's tolerance. The weights are stored again in the file (~148 MB at full size): ONNX has no way
for two graphs to share one initialiser file that every backend reads.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from export.model import TractSeg, dropout_probabilities
from export.onnx_model import ONNX_OPSET, save_onnx
from export.verify import DriftError, drift_figures
from runtime.models.manifest import DROPOUT_FUNCTION, MASK_NAME, Artifact
from runtime.network.backends import is_installed, load_artifact
from runtime.network.dropout import DROPOUT_P, bottleneck_shape, check_masks as dropout_check_masks

DROPOUT_ONNX_FILE = "model_dropout.onnx"
DROPOUT_BACKENDS = ("onnxruntime", "openvino")
CHECK_SEED = 0  # the drawn masks of the check


def check_masks(batch_size: int, slice_size: int) -> list[np.ndarray]:
    """Ones, then two drawn masks (runtime.weights checks its dropout model with the same)."""
    return dropout_check_masks(bottleneck_shape(batch_size, slice_size), CHECK_SEED)


def dropout_function(network: TractSeg) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The exported dropout function, not jitted (see export.bundle.traced_function)."""
    def tractseg_dropout(slices: jax.Array, mask: jax.Array) -> jax.Array:
        return dropout_probabilities(network, slices, mask)

    return tractseg_dropout


def dropout_details(batch_size: int, slice_size: int) -> dict:
    """The artifact's details beyond the opset and exporter: what it computes and its mask input."""
    return {"function": DROPOUT_FUNCTION, "dropout": {"p": DROPOUT_P, "after": "pool_4", "mask_input": MASK_NAME,
                                                      "mask_shape": list(bottleneck_shape(batch_size, slice_size))}}


def save_dropout_onnx(network: TractSeg, batch_size: int, slice_size: int, work: Path) -> list[str]:
    """Trace the dropout model to ``work/model_dropout.onnx`` (python -m export.weight_free makes its weight-free
    graph with this too)."""
    spec = jax.ShapeDtypeStruct((batch_size, 9, slice_size, slice_size), jnp.float32)
    mask_spec = jax.ShapeDtypeStruct(bottleneck_shape(batch_size, slice_size), jnp.float32)
    return save_onnx(dropout_function(network), spec, work, DROPOUT_ONNX_FILE, ((MASK_NAME, mask_spec),))


def dropout_artifact(network: TractSeg, batch_size: int, slice_size: int, work: Path, platforms: tuple[str, ...],
                     batches: list[np.ndarray], tolerance: float, log: Callable[[str], None] = print) -> Artifact:
    """Trace, save and verify the dropout model; DriftError over ``tolerance``."""
    files = save_dropout_onnx(network, batch_size, slice_size, work)
    artifact = Artifact("onnx-dropout", "onnx", DROPOUT_ONNX_FILE, platforms, DROPOUT_BACKENDS, tuple(files),
                        details={"opset": ONNX_OPSET, "exporter": "jax2onnx",
                                 **dropout_details(batch_size, slice_size)})
    live = jax.jit(dropout_function(network))
    pairs = [(batch, mask) for batch in batches for mask in check_masks(batch_size, slice_size)]
    with jax.default_device(jax.devices("cpu")[0]):
        references = [np.asarray(live(batch, mask)) for batch, mask in pairs]
    drift = {}
    for backend in (b for b in DROPOUT_BACKENDS if is_installed(b)):
        run = load_artifact(backend, work / DROPOUT_ONNX_FILE, artifact, "cpu")
        figures = drift_figures((run(batch, mask), ref) for (batch, mask), ref in zip(pairs, references))
        if not figures["max_abs"] <= tolerance:
            raise DriftError(f"artifact {artifact.id} on {backend}: max abs output difference "
                             f"{figures['max_abs']:.2e} > {tolerance:.2e} against the live JAX model")
        drift[backend] = {**figures, "tolerance": tolerance, "device": "cpu", "slices": sum(len(b) for b in batches),
                          "masks": "ones and 2 drawn (seed 0) per check batch"}
        log(f"[export]   {artifact.id} on {backend}: max abs {figures['max_abs']:.2e}")
    return replace(artifact, drift=drift)
