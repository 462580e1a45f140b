"""TensorFlow on the bundle's SavedModel (jax2tf native serialisation: one XlaCallModule for cpu and cuda)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from runtime.network.backends import BackendError
from runtime.models.manifest import INPUT_NAME, Artifact


class TensorFlowBackend:
    name = "tensorflow"

    def __init__(self, path: Path, device: str, nr_cpus: int | None):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        if nr_cpus:
            tf.config.threading.set_intra_op_parallelism_threads(nr_cpus)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        self.version = tf.__version__
        self._tf = tf
        if device == "cuda":
            gpus = tf.config.list_physical_devices("GPU")
            if not gpus:
                raise BackendError(f"tensorflow {tf.__version__} sees no GPU")
            self.tf_device = "/GPU:0"
        else:
            tf.config.set_visible_devices([], "GPU")
            self.tf_device = "/CPU:0"
        with tf.device(self.tf_device):
            self.model = tf.saved_model.load(str(path))
        self.signature = self.model.signatures["serving_default"]
        self.device = device
        self.detail = self.tf_device

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self._tf.device(self.tf_device):
            out = self.signature(**{INPUT_NAME: self._tf.constant(batch)})
        return next(iter(out.values())).numpy()


def load(path: Path, artifact: Artifact, device: str, nr_cpus: int | None) -> TensorFlowBackend:
    return TensorFlowBackend(path, device, nr_cpus)
