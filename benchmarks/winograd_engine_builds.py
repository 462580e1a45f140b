"""The rows of `python -m benchmarks winograd-engines` and how each engine's model is made from the bundle (issue
31): IREE modules compiled from the bundle's StableHLO for this host, with and without IREE's Winograd pass; an
ncnn model converted by pnnx from a TorchScript trace of upstream's network with the bundle's weights (pnnx
cannot map the bundle's ONNX max-pool, a 6-D reshape + ReduceMax, onto ncnn's 4-D blobs); a TVM relax library
from the bundle's ONNX after ONNX Runtime's basic constant folding (relax's importer cannot read the
ConvTranspose weights' computed shapes otherwise). Built once per bundle under benchmarks/out/winograd-engines/
<bundle>/; a build that cannot run here raises RuntimeError with the reason (the row is then skipped).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.bundle import REPO

WINOGRAD_PIPELINE = ("--iree-preprocessing-pass-pipeline=builtin.module(util.func("
                     "iree-linalg-ext-convert-conv2d-to-winograd{replace-all-convs=true}))")
IREE_HOST = ("--iree-llvmcpu-target-triple=x86_64-unknown-linux-gnu", "--iree-llvmcpu-target-cpu=host")
ROWS: dict[str, dict[str, str]] = {
    "onnxruntime-direct": {"engine": "onnxruntime", "what": "the bundle's model.onnx, direct convolution (MLAS)"},
    "iree-portable-v4": {"engine": "iree", "what": "the bundle's model.iree-cpu-avx512.vmfb (x86-64-v4)"},
    "iree-host": {"engine": "iree", "what": "StableHLO -> llvm-cpu, --iree-llvmcpu-target-cpu=host"},
    "iree-host-winograd": {"engine": "iree", "what": "the same + iree-linalg-ext-convert-conv2d-to-winograd "
                                                    "(F(6,3), every 3x3 conv)"},
    "ncnn-winograd": {"engine": "ncnn", "what": "pnnx(upstream TorchScript) -> ncnn, Winograd on (its default)"},
    "ncnn-direct": {"engine": "ncnn", "what": "the same ncnn model, use_winograd_convolution=False"},
    "tvm-relax": {"engine": "tvm", "what": "relax from ONNX, default CPU pipeline, llvm -mcpu=<host>, no tuning"},
}


def _cached(done: Path, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """make() once: its record (build_s, commands) is kept in `done` and reused."""
    if done.is_file():
        return {**json.loads(done.read_text()), "cached": True}
    t0 = time.perf_counter()
    record = make()
    record["build_s"] = round(time.perf_counter() - t0, 1)
    done.write_text(json.dumps(record, indent=1) + "\n")
    return record


def _iree(mlirbc: Path, out: Path, winograd: bool) -> dict[str, Any]:
    import iree.compiler as ireec

    flags = [*IREE_HOST, *([WINOGRAD_PIPELINE] if winograd else [])]
    ireec.compile_file(str(mlirbc), target_backends=["llvm-cpu"], input_type="stablehlo", extra_args=flags,
                       output_file=str(out))
    return {"command": ["iree-compile", mlirbc.name, "--iree-input-type=stablehlo",
                        "--iree-hal-target-backends=llvm-cpu", *flags, "-o", out.name]}


def _ncnn(pnnx: Path, folder: Path, args: argparse.Namespace, n_classes: int) -> dict[str, Any]:
    try:
        import torch

        from benchmarks.runners import upstream_state_dict
        from benchmarks.upstream_net import upstream_network
    except ImportError as error:
        raise RuntimeError(f"the TorchScript trace needs torch + tractseg in this python ({error})") from None
    net = upstream_network(n_classes, args.seed)
    net.load_state_dict(upstream_state_dict(args.seed, n_classes), strict=True)

    class Probabilities(torch.nn.Module):  # sigmoid in the graph; the z-score stays in numpy (the worker)
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return torch.sigmoid(self.inner(x))

    with torch.no_grad():
        traced = torch.jit.trace(Probabilities(net).eval(), torch.zeros(1, 9, args.slice_size, args.slice_size))
    traced.save(str(folder / "upstream.pt"))
    command = [str(pnnx), "upstream.pt", f"inputshape=[1,9,{args.slice_size},{args.slice_size}]", "fp16=0"]
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not (folder / "upstream.ncnn.bin").is_file():
        raise RuntimeError(f"pnnx failed ({done.returncode}): {done.stdout[-300:]} {done.stderr[-300:]}")
    return {"command": ["torch.jit.trace(upstream UNet_Pytorch_DeepSup + sigmoid, (1, 9, S, S))",
                        " ".join(["pnnx", *command[1:]])], "torch": torch.__version__}


def _tvm(python: str, onnx_path: Path, folder: Path) -> dict[str, Any]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # constant folding, ONNX ops
    options.optimized_model_filepath = str(folder / "folded.onnx")
    ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    done = subprocess.run([python, "-m", "benchmarks.engine_worker", "build-tvm", "folded.onnx", "model.so"],
                          cwd=folder, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"TVM build ({python}): {done.stdout[-300:]} {done.stderr[-300:]}")
    return {"command": ["onnxruntime ORT_ENABLE_BASIC -> folded.onnx",
                        "relax.frontend.onnx.from_onnx + DecomposeOpsForInference + tvm.compile"],
            **json.loads(done.stdout.strip().splitlines()[-1])}


def build_row(name: str, manifest, work: Path, args: argparse.Namespace, log=print) -> tuple[dict, dict]:
    """(build record, the worker's engine arguments) of one row."""
    if name == "onnxruntime-direct":
        return {"build_s": "bundle"}, {"path": str(manifest.verified_path(manifest.artifact("onnx")))}
    if name.startswith("iree"):
        source = manifest.artifact("stablehlo")
        module = {"module": source.details["module"], "function": source.details["function"]}
        if name == "iree-portable-v4":
            path = manifest.verified_path(manifest.artifact("iree-cpu-avx512"))
            return {"build_s": "bundle"}, {"path": str(path), **module}
        winograd = name.endswith("winograd")
        out = work / f"{name}.vmfb"
        log(f"[bench] {name}: compiling {out.name}")
        record = _cached(work / f"{name}.json", lambda: _iree(manifest.verified_path(source), out, winograd))
        return record, {"path": str(out), **module}
    if name.startswith("ncnn"):
        pnnx = Path(args.engine_python).parent / "pnnx"
        if not pnnx.is_file():
            raise RuntimeError(f"pnnx not installed beside {args.engine_python}")
        folder = work / "ncnn"
        folder.mkdir(exist_ok=True)
        log(f"[bench] {name}: converting with {pnnx}")
        record = _cached(folder / "build.json", lambda: _ncnn(pnnx, folder, args, manifest.n_classes))
        return record, {"param": str(folder / "upstream.ncnn.param"), "bin": str(folder / "upstream.ncnn.bin"),
                        "winograd": name == "ncnn-winograd"}
    folder = work / "tvm"
    folder.mkdir(exist_ok=True)
    log(f"[bench] {name}: building with {args.engine_python}")
    onnx_path = manifest.verified_path(manifest.artifact("onnx"))
    record = _cached(folder / "build.json", lambda: _tvm(args.engine_python, onnx_path, folder))
    return record, {"path": str(folder / "model.so")}
