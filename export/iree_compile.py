"""IREE ahead-of-time compilation of the StableHLO bytecode to .vmfb modules.

CPU, two llvm-cpu targets, both verified at export:
- `cpu-avx512` (x86-64-v4: AVX-512 F/BW/CD/DQ/VL; Intel Skylake-SP and later, AMD Zen 4 and later), first choice;
- `cpu` (x86-64-v3: AVX2 + FMA, any x86-64 server since ~2015), the portable fallback. With IREE 3.13 its
  convolutions are ~5x slower than the AVX-512 module's on this network (13 vs 2.4 s/slice measured here), so
  on AVX2-only machines prefer ONNX Runtime or OpenVINO.
CUDA: sm_80 (Ampere); the module carries PTX, which newer GPUs JIT-compile.
The runtime picks the first artifact whose `requires_cpu_flags` the machine has.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

AVX512_FLAGS = ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")


@dataclass(frozen=True)
class IreeTarget:
    platform: str
    backend: str
    flags: tuple[str, ...]
    cpu_flags: tuple[str, ...] = ()


_X86 = "--iree-llvmcpu-target-triple=x86_64-unknown-linux-gnu"
IREE_TARGETS: dict[str, IreeTarget] = {
    "cpu-avx512": IreeTarget("cpu", "llvm-cpu", (_X86, "--iree-llvmcpu-target-cpu=x86-64-v4"), AVX512_FLAGS),
    "cpu": IreeTarget("cpu", "llvm-cpu", (_X86, "--iree-llvmcpu-target-cpu=x86-64-v3"), ("avx2", "fma")),
    "cuda": IreeTarget("cuda", "cuda", ("--iree-cuda-target=sm_80",)),
}


def vmfb_file(target: str) -> str:
    return f"model.iree-{target}.vmfb"


def compile_vmfb(mlirbc: Path, target: str, out_path: Path) -> list[str]:
    """Compile one single-platform StableHLO module; returns the compiler flags used."""
    import iree.compiler as ireec

    spec = IREE_TARGETS[target]
    ireec.compile_file(str(mlirbc), target_backends=[spec.backend], input_type="stablehlo",
                       extra_args=list(spec.flags), output_file=str(out_path))
    return [f"--iree-hal-target-backends={spec.backend}", *spec.flags]
