"""Everything that turns a raw batch (B, 9, S, S) into probabilities (B, C, S, S), behind one callable each:
every artifact of the bundle on every installed backend and device, the live JAX model (jit) and upstream's
PyTorch network with the same weights."""
from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.network.backends import BACKENDS, cuda_available, is_installed, load_artifact
from runtime.models.manifest import Manifest, host_cpu_flags

LIVE_ID = "live-jax"
UPSTREAM_ID = "upstream-torch"


@dataclass
class Runner:
    id: str  # row id, e.g. "onnx/onnxruntime/cpu"
    kind: str  # "artifact" or "reference"
    backend: str
    device: str
    artifact: str | None = None
    version: str = ""
    detail: str = ""
    precision: str = "fp32"
    selected: bool = True  # what `runtime.run --backend <backend> --device <device>` would load on this machine
    call: Callable[[np.ndarray], np.ndarray] | None = None
    skipped: str | None = None  # why it could not run
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "artifact": self.artifact, "backend": self.backend,
                "device": self.device, "version": self.version, "detail": self.detail,
                "precision": self.precision, "selected_by_runtime": self.selected, "skipped": self.skipped,
                **self.extra}


def devices() -> list[str]:
    return ["cpu", "cuda"] if cuda_available() else ["cpu"]


def _precision(detail: str) -> str:
    low = detail.lower()
    return "bf16" if "bf16" in low else ("fp16" if "f16" in low else "fp32")


def artifact_runners(manifest: Manifest, backends: list[str] | None = None) -> list[Runner]:
    """One runner per (artifact, backend, device) that this machine can run; the others with `skipped`."""
    flags = host_cpu_flags()
    runners = []
    for artifact in manifest.plain_artifacts:  # not the dropout model: another signature
        for backend in artifact.backends:
            if backends and backend not in backends:
                continue
            for device in artifact.platforms:
                runner = Runner(id=f"{artifact.id}/{backend}/{device}", kind="artifact", backend=backend,
                                device=device, artifact=artifact.id,
                                selected=backend in BACKENDS and manifest.find(backend, device, flags) is artifact)
                needs = set(artifact.details.get("requires_cpu_flags", ())) if device == "cpu" else set()
                if device not in devices():
                    runner.skipped = f"no {device} device on this machine"
                elif backend != "jax" and not is_installed(backend):
                    runner.skipped = f"{backend} not installed"
                elif not needs <= flags:
                    runner.skipped = f"CPU lacks {sorted(needs - flags)}"
                runners.append(runner)
    return runners


def open_artifact(manifest: Manifest, runner: Runner) -> None:
    """Load the artifact (checksums verified) with the runtime's own backend module."""
    try:
        artifact = manifest.artifact(runner.artifact)
        path = manifest.verified_path(artifact)
        if runner.backend == "jax":
            loaded = JaxExported(path)
        else:
            loaded = load_artifact(runner.backend, path, artifact, runner.device)
    except Exception as error:  # a backend that fails to load is a row with its reason, not a crash
        runner.skipped = f"failed to load: {' '.join(str(error).split())[:200]}"
        return
    runner.call, runner.version, runner.detail = loaded, loaded.version, loaded.detail
    runner.precision = _precision(loaded.detail)


class JaxExported:
    """A .jaxexport artifact (jax.export, needs JAX: not a deploy route, listed for completeness)."""

    def __init__(self, path):
        import jax

        self.exported = jax.export.deserialize(bytearray(path.read_bytes()))
        self.version, self.detail = jax.__version__, "jax.export.deserialize(...).call"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.exported.call(batch))


class JaxSlices:
    """The live Equinox model, jitted, as a runtime-style backend (name, device, version, detail, __call__)."""

    name = "jax"

    def __init__(self, seed: int, n_classes: int):
        import equinox as eqx
        import jax

        from export.model import slice_probabilities
        from export.weights import model_from_state_dict, random_state_dict

        self._jnp = jax.numpy
        self.model = model_from_state_dict(random_state_dict(seed, n_classes))
        self.fn = eqx.filter_jit(slice_probabilities)
        self.device = jax.devices()[0].platform
        self.version = jax.__version__
        self.detail = "eqx.filter_jit(slice_probabilities), live model"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.fn(self.model, self._jnp.asarray(batch)))


def live_runner(seed: int, n_classes: int) -> Runner:
    live = JaxSlices(seed, n_classes)
    return Runner(id=f"{LIVE_ID}/jit/{live.device}", kind="reference", backend="jax", device=live.device,
                  version=live.version, detail=live.detail, call=live)


def upstream_state_dict(seed: int, n_classes: int):
    """The bundle's random weights as a torch state_dict under upstream's key names."""
    import torch

    from export.weights import random_state_dict

    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in random_state_dict(seed, n_classes).items()}


def upstream_runner(seed: int, n_classes: int) -> Runner:
    """Upstream's UNet_Pytorch_DeepSup with the bundle's weights, upstream's float64 per-slice normalisation."""
    runner = Runner(id=f"{UPSTREAM_ID}/torch/cpu", kind="reference", backend="torch", device="cpu")
    try:
        import torch

        from benchmarks.upstream_net import upstream_network, upstream_probabilities
    except ImportError as error:
        runner.skipped = f"upstream not installed ({error})"
        return runner
    try:
        net = upstream_network(n_classes, seed)
        net.load_state_dict(upstream_state_dict(seed, n_classes), strict=True)
    except ImportError as error:
        runner.skipped = f"upstream not installed ({error})"
        return runner
    runner.version, runner.call = torch.__version__, (lambda batch: upstream_probabilities(net, batch))
    runner.detail = f"UNet_Pytorch_DeepSup, {torch.get_num_threads()} threads, float64 z-score"
    return runner


def close(runners: list[Runner]) -> None:
    for runner in runners:
        runner.call = None
    gc.collect()
