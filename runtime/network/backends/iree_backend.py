"""IREE runtime on the bundle's ahead-of-time compiled .vmfb: local-task (CPU) or cuda driver."""
from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import numpy as np

from runtime.network.backends import BackendError
from runtime.models.manifest import Artifact

DRIVERS = {"cpu": "local-task", "cuda": "cuda"}


class IreeBackend:
    name = "iree"

    def __init__(self, path: Path, artifact: Artifact, device: str, nr_cpus: int | None):
        import iree.runtime as ireert

        self.version = version("iree-base-runtime")
        driver = DRIVERS[device]
        if device == "cpu" and nr_cpus:
            ireert.flags.parse_flags(f"--task_topology_max_group_count={nr_cpus}")
        try:
            config = ireert.Config(driver)
        except (RuntimeError, ValueError) as e:
            raise BackendError(f"IREE driver {driver!r} unavailable: {str(e).splitlines()[0]}") from None
        self.context = ireert.SystemContext(config=config)
        self.context.add_vm_module(ireert.VmModule.mmap(config.vm_instance, str(path)))
        module = artifact.details["module"]
        self.function = self.context.modules[module][artifact.details["function"]]
        self.device = device
        self.detail = driver

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.function(batch).to_host())


def load(path: Path, artifact: Artifact, device: str, nr_cpus: int | None) -> IreeBackend:
    return IreeBackend(path, artifact, device, nr_cpus)
