"""ONNX Runtime on the bundle's ONNX file: CPUExecutionProvider or CUDAExecutionProvider, checked in use."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.network.backends import BackendError
from runtime.models.manifest import INPUT_NAME, MASK_NAME, Artifact

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, path: Path, device: str, nr_cpus: int | None):
        import onnxruntime as ort

        self.version = ort.__version__
        options = ort.SessionOptions()
        options.enable_cpu_mem_arena = False  # the arena kept ~0.3 GB more at peak (HCP-size run)
        # Each tensor allocated when made and freed after its last use, in the priority-based node order: a batch
        # of 4 at S=144 peaks 175 MiB above the loaded session instead of 313 MiB (default order, one block planned
        # per run; ORT 1.32, 2-core EPYC). Neither the node order nor the
        # allocation changes a kernel's arithmetic: the same outputs, bit for bit (benchmarks/memory.py).
        options.enable_mem_pattern = False
        options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
        options.log_severity_level = 4  # fatal only: a failure is raised (one line from the CLI), not logged too
        if nr_cpus:
            options.intra_op_num_threads = nr_cpus
            options.inter_op_num_threads = 1
        provider = PROVIDERS[device]
        if provider not in ort.get_available_providers():
            hint = (" (the onnxruntime wheel is CPU-only: pip install onnxruntime-gpu in its place)"
                    if device == "cuda" else "")
            raise BackendError(f"onnxruntime {ort.__version__} has no {provider} "
                               f"(available: {', '.join(ort.get_available_providers())}){hint}")
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=[provider])
        in_use = self.session.get_providers()
        if in_use[0] != provider:  # ORT falls back to CPU silently when CUDA fails to load: refuse
            raise BackendError(f"onnxruntime did not enable {provider} for {path} (providers in use: {in_use})")
        self.device = device
        self.detail = provider

    def __call__(self, batch: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """``mask``: the dropout model's second input (``--uncertainty``)."""
        feeds = {INPUT_NAME: batch} if mask is None else {INPUT_NAME: batch, MASK_NAME: mask}
        return self.session.run(None, feeds)[0]


def load(path: Path, artifact: Artifact, device: str, nr_cpus: int | None) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(path, device, nr_cpus)
