"""OpenVINO on the bundle's ONNX file, CPU, f32 inference precision unless the artifact says otherwise.

OpenVINO's CPU default on AMX/bf16 machines is bf16 (~1e-4 drift); we ask for f32 so the result stays within
the project's 1e-5 tolerance. A bf16 artifact (`--precision bf16`) is the same ONNX file with
details.inference_precision "bf16". OpenVINO has no CUDA device.

OpenVINO is imported with its usage telemetry declined (:func:`import_openvino`): on import it sends a usage event
to Google Analytics from a forked process (``openvino_telemetry``; declined only under ``CI=true`` or after
``opt_in_out --opt_out``). A clinical deployment must not send anything, and a fork once JAX or a backend has
started threads risks a deadlock (JAX warned of it during every ``python -m export``).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

from runtime.network.backends import BackendError
from runtime.models.manifest import Artifact


def import_openvino() -> ModuleType:
    """``openvino``, imported with its telemetry declined for this process (see the module docstring): its
    telemetry object is made on import, under ``CI=true``, which it reads as declined; the variable is restored."""
    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    saved = os.environ.get("CI")
    os.environ["CI"] = "true"
    try:
        import openvino
    finally:
        if saved is None:
            del os.environ["CI"]
        else:
            os.environ["CI"] = saved
    return openvino


class OpenVinoBackend:
    name = "openvino"

    def __init__(self, path: Path, device: str, nr_cpus: int | None, precision: str = "f32"):
        ov = import_openvino()
        from openvino.frontend import FrontEndManager

        if device != "cpu":
            raise BackendError(f"openvino runs on cpu here, not {device}")
        self.version = ov.get_version()
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        if nr_cpus:
            config["INFERENCE_NUM_THREADS"] = nr_cpus
        # the ONNX frontend only: compile_model(path) lets every frontend probe the file, and TensorFlow's prints
        # "Error parsing text-format tensorflow.GraphDef" lines to stderr for a file that is not ONNX
        frontend = FrontEndManager().load_by_framework("onnx")
        model = frontend.convert(frontend.load(str(path)))
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")  # an element Type: its name, not its repr
        got = getattr(hint, "type_name", None) or getattr(hint, "get_type_name", lambda: str(hint))()
        self.device = "cpu"
        self.detail = f"CPU {got}"

    def __call__(self, batch: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """``mask``: the dropout model's second input (``--uncertainty``)."""
        result = self.request.infer({0: batch} if mask is None else {0: batch, 1: mask})
        return np.array(result[self.compiled.output(0)], copy=True)


def load(path: Path, artifact: Artifact, device: str, nr_cpus: int | None) -> OpenVinoBackend:
    return OpenVinoBackend(path, device, nr_cpus, artifact.details.get("inference_precision", "f32"))
