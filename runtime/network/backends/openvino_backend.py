"""OpenVINO on the bundle's ONNX file, CPU, f32 inference precision unless the artifact says otherwise.

OpenVINO's CPU default on AMX/bf16 machines is bf16 (~1e-4 drift); we ask for f32 so the result stays within
the project's 1e-5 tolerance. A bf16 artifact (`--precision bf16`) is the same ONNX file with
details.inference_precision "bf16". OpenVINO has no CUDA device.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.network.backends import BackendError
from runtime.models.manifest import Artifact


class OpenVinoBackend:
    name = "openvino"

    def __init__(self, path: Path, device: str, nr_cpus: int | None, precision: str = "f32"):
        import openvino as ov
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

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: batch})
        return np.array(result[self.compiled.output(0)], copy=True)


def load(path: Path, artifact: Artifact, device: str, nr_cpus: int | None) -> OpenVinoBackend:
    return OpenVinoBackend(path, device, nr_cpus, artifact.details.get("inference_precision", "f32"))
