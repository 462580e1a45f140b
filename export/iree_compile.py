"""IREE ahead-of-time compilation of the StableHLO bytecode to .vmfb modules.

CPU: llvm-cpu for a portable x86-64 target (x86-64-v3: AVX2 + FMA, any x86-64 server since ~2015), so the
module runs beyond the build host. CUDA: sm_80 (Ampere); the module carries PTX, which newer GPUs JIT.
"""
from __future__ import annotations

from pathlib import Path

IREE_TARGETS: dict[str, tuple[str, list[str]]] = {
    "cpu": ("llvm-cpu", ["--iree-llvmcpu-target-triple=x86_64-unknown-linux-gnu",
                         "--iree-llvmcpu-target-cpu=x86-64-v3"]),
    "cuda": ("cuda", ["--iree-cuda-target=sm_80"]),
}


def vmfb_file(platform: str) -> str:
    return f"model.iree-{platform}.vmfb"


def compile_vmfb(mlirbc: Path, platform: str, out_path: Path) -> list[str]:
    """Compile one single-platform StableHLO module; returns the compiler flags used."""
    import iree.compiler as ireec

    backend, flags = IREE_TARGETS[platform]
    ireec.compile_file(str(mlirbc), target_backends=[backend], input_type="stablehlo",
                       extra_args=flags, output_file=str(out_path))
    return [f"--iree-hal-target-backends={backend}", *flags]
