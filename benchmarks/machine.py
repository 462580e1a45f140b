"""What the numbers were measured on: CPU model and flags, cores, RAM, load, package versions, repository state."""
from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

from runtime.host import package_versions

REPO = Path(__file__).resolve().parent.parent
FLAGS_OF_INTEREST = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512cd", "avx512dq",
                     "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
PACKAGES = ("numpy", "scipy", "nibabel", "jax", "jaxlib", "equinox", "onnxruntime", "openvino",
            "iree-base-runtime", "iree-base-compiler", "tensorflow-cpu", "tensorflow", "torch", "tractseg",
            "jax2onnx", "onnx", "matplotlib")


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key and key not in info:
                info[key] = value.strip()
    except OSError:
        pass
    return info


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    return None


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def versions() -> dict[str, str]:
    return package_versions(PACKAGES, missing=None)


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain", "--", "export",
                                                                         "runtime", "benchmarks"))}


def machine_info() -> dict[str, Any]:
    cpu = _cpuinfo()
    flags = set(cpu.get("flags", "").split())
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu_model": cpu.get("model name", platform.processor() or "unknown"),
        "cpu_mhz": cpu.get("cpu MHz"),
        "cpu_flags": sorted(f for f in FLAGS_OF_INTEREST if f in flags),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "threads_per_core": _threads_per_core(),
        "ram_gib": _mem_total_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "load_average_at_start": load_average(),
        "versions": versions(),
        "git": git_state(),
    }


def _threads_per_core() -> int | None:
    done = subprocess.run(["lscpu"], capture_output=True, text=True) if _has("lscpu") else None
    if done and done.returncode == 0:
        match = re.search(r"Thread\(s\) per core:\s*(\d+)", done.stdout)
        if match:
            return int(match.group(1))
    return None


def _has(tool: str) -> bool:
    return any((Path(p) / tool).is_file() for p in os.environ.get("PATH", "").split(os.pathsep))


def machine_kind(info: dict[str, Any]) -> str:
    """A file-name slug for the machine kind, e.g. 'intel-xeon-processor-2-50ghz-2cpu-avx512-amx'."""
    model = re.sub(r"\((r|tm)\)", "", info["cpu_model"].lower())
    slug = re.sub(r"[^a-z0-9]+", "-", model).strip("-")
    isa = "-avx512" if "avx512f" in info["cpu_flags"] else ("-avx2" if "avx2" in info["cpu_flags"] else "")
    amx = "-amx" if "amx_bf16" in info["cpu_flags"] else ""
    return f"{slug}-{info['usable_cpus']}cpu{isa}{amx}"
