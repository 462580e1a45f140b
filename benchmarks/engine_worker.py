"""One inference engine in its own process, for `python -m benchmarks winograd-engines` (issue 31): the engines
that are not project dependencies (ncnn, TVM) live in another virtual environment, so every row runs in a worker
like this one, started with that environment's python and driven over stdin/stdout (one JSON object a line);
the worker's own peak RSS is the row's memory. numpy only at import time, so that any venv can run it.

    python -m benchmarks.engine_worker serve ENGINE JSON_ARGS   # then {"op": "run"|"time"|"rss"|"quit", ...}
    python -m benchmarks.engine_worker build-tvm ONNX OUT.so    # relax from ONNX, default CPU pipeline, host CPU

Engines: onnxruntime and iree (the runtime's own backend classes), ncnn (pnnx-converted upstream TorchScript at
batch 1, slice by slice; upstream's float64 z-score in numpy), tvm (a relax VM library).
"""
from __future__ import annotations

import json
import resource
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import SimpleNamespace

import numpy as np

SKIP = 3  # exit status: the engine is not installed in this python


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


class Ncnn:
    def __init__(self, param: str, bin: str, winograd: bool, threads: int):
        import ncnn

        self.net = ncnn.Net()
        opt = self.net.opt
        opt.num_threads = threads
        opt.use_winograd_convolution = winograd
        # fp32 throughout: ncnn would store / compute in fp16 or bf16 where the CPU allows
        opt.use_fp16_packed = opt.use_fp16_storage = opt.use_fp16_arithmetic = False
        opt.use_bf16_storage = opt.use_bf16_packed = False
        self.net.load_param(param)
        self.net.load_model(bin)
        self._mat = ncnn.Mat
        self.version = f"ncnn {_version('ncnn')}, pnnx {_version('pnnx')}"
        self.detail = f"winograd {'on' if winograd else 'off'}, fp32, {threads} threads, one slice per extract"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = batch.astype(np.float64)  # upstream's per-slice z-score (benchmarks/upstream_net.py)
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        std = x.std(axis=(1, 2, 3), keepdims=True) + 1e-7
        x = ((x - mean) / std).astype(np.float32)
        out = []
        for one in x:
            ex = self.net.create_extractor()
            ex.input("in0", self._mat(np.ascontiguousarray(one)))
            _, probabilities = ex.extract("out0")
            out.append(np.array(probabilities))
        return np.stack(out)


class Tvm:
    def __init__(self, library: str, threads: int):
        import tvm
        from tvm import relax

        self._tvm = tvm
        self.vm = relax.VirtualMachine(tvm.runtime.load_module(library), tvm.cpu())
        self.version = f"apache-tvm {_version('apache-tvm')}"
        self.detail = f"relax VM, {threads} threads (TVM_NUM_THREADS)"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        out = self.vm["main"](self._tvm.runtime.tensor(batch))
        return (out[0] if not hasattr(out, "numpy") else out).numpy()


def _project(engine: str, args: dict):
    if engine == "onnxruntime":
        from runtime.network.backends.onnxruntime_backend import OnnxRuntimeBackend

        loaded = OnnxRuntimeBackend(args["path"], "cpu", args["threads"])
        loaded.version, loaded.detail = f"onnxruntime {loaded.version}", f"{loaded.detail}, {args['threads']} threads"
        return loaded
    from runtime.network.backends.iree_backend import IreeBackend

    artifact = SimpleNamespace(details={"module": args["module"], "function": args["function"]})
    loaded = IreeBackend(args["path"], artifact, "cpu", args["threads"])
    loaded.version = f"iree-base-runtime {loaded.version}"
    loaded.detail = f"local-task, task_topology_max_group_count={args['threads']}"
    return loaded


def load(engine: str, args: dict):
    modules = {"onnxruntime": "onnxruntime", "iree": "iree.runtime", "ncnn": "ncnn", "tvm": "tvm"}
    try:
        __import__(modules[engine])
    except ImportError as error:
        raise ModuleNotFoundError(f"{engine} not installed in {sys.executable} ({error})") from None
    if engine == "ncnn":
        return Ncnn(args["param"], args["bin"], args["winograd"], args["threads"])
    if engine == "tvm":
        return Tvm(args["path"], args["threads"])
    return _project(engine, args)


def peak_rss_mib() -> float:
    """This process's peak RSS: VmHWM (reset at exec; ru_maxrss keeps the parent's peak from before the fork)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def serve(engine: str, args: dict) -> int:
    def reply(**fields) -> None:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()

    t0 = time.perf_counter()
    try:
        model = load(engine, args)
    except ModuleNotFoundError as error:
        reply(ok=False, skip=str(error))
        return SKIP
    reply(ok=True, version=model.version, detail=model.detail, load_s=round(time.perf_counter() - t0, 2))
    inputs: dict[str, np.ndarray] = {}
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "quit":
            break
        if request["op"] == "rss":
            reply(max_rss_mib=peak_rss_mib())
            continue
        batch = inputs.setdefault(request["input"], np.load(request["input"]))
        t = time.perf_counter()
        out = np.asarray(model(batch))
        seconds = time.perf_counter() - t
        if request["op"] == "run":
            np.save(request["output"], out.astype(np.float32))
        reply(s=seconds)
    return 0


def build_tvm(onnx_path: str, out: str) -> int:
    try:
        import onnx
        import tvm
        from tvm import relax
        from tvm.relax.frontend.onnx import from_onnx
    except ImportError as error:
        print(f"tvm not installed in {sys.executable} ({error})")
        return SKIP
    model = onnx.load(onnx_path)
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    mod = relax.transform.DecomposeOpsForInference()(from_onnx(model, shape_dict=shapes, keep_params_in_input=False))
    cpu = tvm.target.codegen.llvm_get_system_cpu()
    target = tvm.target.Target({"kind": "llvm", "mcpu": cpu})
    tvm.compile(mod, target=target).export_library(out)
    print(json.dumps({"target": str(target.export() if hasattr(target, "export") else target), "mcpu": cpu,
                      "pipeline": "relax default (LegalizeOps: unscheduled TOPI compute), no tuning"}))
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        sys.exit(serve(sys.argv[2], json.loads(sys.argv[3])))
    sys.exit(build_tvm(sys.argv[2], sys.argv[3]))
