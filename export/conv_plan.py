"""`python -m export --conv-algorithm`: which algorithm each 3x3 convolution is written with, and for `auto` the
per-layer timing on this host that decides it.

- direct, winograd2, winograd4: that algorithm for every 3x3 layer (reproducible; what the benchmark compares).
- auto: each 3x3 layer alone (its own ONNX, traced with jax2onnx at its real input shape for this slice and batch
  size, LeakyReLU included so ONNX Runtime can fuse it into a direct Conv as in the network) is timed with each
  algorithm on every installed ONNX backend of the runtime (ONNX Runtime, OpenVINO f32), the variants alternated
  round by round so that load from other jobs hits them alike; a layer takes the algorithm with the lowest sum of
  median times over the backends. Candidate plans, fastest first: that choice; the same with winograd4 excluded
  (larger rounding error); all direct. The export keeps the first plan whose live model passes the drift gate.
"""
from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from export.model import TractSeg, leaky_relu
from export.winograd import ALGORITHMS, conv3_layers, with_algorithms
from runtime.models.manifest import INPUT_NAME, OUTPUT_NAME, Artifact

CHOICES = (*ALGORITHMS, "auto")
TIMING_BACKENDS = ("onnxruntime", "openvino")
Plan = dict[str, str]  # {3x3 layer: algorithm}


def level(name: str) -> int:
    """Pooling depth of a 3x3 layer's input: contr_k -> k-1, encode -> 4, expand_k -> 4-k."""
    if name.startswith("encode"):
        return 4
    depth = int(name.split("_")[1])
    return depth - 1 if name.startswith("contr") else 4 - depth


def layer_input_shapes(network: TractSeg, batch_size: int, slice_size: int) -> dict[str, tuple[int, ...]]:
    """(B, C_in, H, W) of every 3x3 layer for a (B, 9, S, S) batch."""
    shapes = {}
    for name in conv3_layers(network):
        side = slice_size >> level(name)
        shapes[name] = (batch_size, int(network.layers[name].weight.shape[1]), side, side)
    return shapes


def uniform(network: TractSeg, algorithm: str) -> Plan:
    return {name: algorithm for name in conv3_layers(network)}


def layer_onnx(network: TractSeg, name: str, algorithm: str, shape: tuple[int, ...], out: Path) -> Path:
    """One 3x3 layer (+ LeakyReLU) computed with `algorithm`, as its own ONNX file."""
    from jax2onnx import to_onnx

    layer = with_algorithms(network, {name: algorithm}).layers[name]
    path = out / f"{name}.{algorithm}.onnx"
    to_onnx(lambda x: leaky_relu(layer(x)), [jax.ShapeDtypeStruct(shape, jnp.float32)], model_name=name,
            opset=17, return_mode="file", output_path=str(path), input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME])
    return path


def installed_timing_backends() -> tuple[str, ...]:
    from runtime.network.backends import is_installed

    return tuple(b for b in TIMING_BACKENDS if is_installed(b))


def open_runner(path: Path, backend: str) -> Callable[[np.ndarray], np.ndarray]:
    from runtime.network.backends import load_artifact

    artifact = Artifact(path.stem, "onnx", path.name, ("cpu",), (backend,), (path.name,))
    return load_artifact(backend, path, artifact, "cpu")


def alternate(runners: dict[tuple[str, str], Callable[[np.ndarray], np.ndarray]], batch: np.ndarray,
              rounds: int) -> dict[tuple[str, str], list[float]]:
    """Seconds of each runner on `batch`: one warm-up each, then `rounds` rounds, every runner once per round."""
    for run in runners.values():
        run(batch)
    seconds: dict[tuple[str, str], list[float]] = {key: [] for key in runners}
    for _ in range(rounds):
        for key, run in runners.items():
            t0 = time.perf_counter()
            run(batch)
            seconds[key].append(time.perf_counter() - t0)
    return seconds


def time_layers(network: TractSeg, batch_size: int, slice_size: int, algorithms: tuple[str, ...] = ALGORITHMS,
                backends: tuple[str, ...] | None = None, rounds: int = 3, layers: list[str] | None = None,
                log: Callable[[str], None] = print) -> dict[str, dict[str, dict[str, list[float]]]]:
    """{layer: {algorithm: {backend: [seconds per run]}}} for every 3x3 layer, alternated per layer."""
    backends = backends or installed_timing_backends()
    shapes = layer_input_shapes(network, batch_size, slice_size)
    rng = np.random.default_rng(0)
    found: dict[str, dict[str, dict[str, list[float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="tractseg-conv-") as tmp:
        for name in layers or list(shapes):
            batch = rng.standard_normal(shapes[name], dtype=np.float32)
            runners = {(algorithm, backend): open_runner(layer_onnx(network, name, algorithm, shapes[name],
                                                                    Path(tmp)), backend)
                       for algorithm in algorithms for backend in backends}
            seconds = alternate(runners, batch, rounds)
            found[name] = {a: {b: seconds[(a, b)] for b in backends} for a in algorithms}
            medians = {a: sum(float(np.median(v)) for v in found[name][a].values()) for a in algorithms}
            log(f"[export]   {name} {shapes[name]}: " + ", ".join(f"{a} {1e3 * s:.1f} ms" for a, s in medians.items())
                + f" (sum over {', '.join(backends)})")
            for path in Path(tmp).iterdir():
                path.unlink()
    return found


def fastest(timings: dict[str, dict[str, dict[str, list[float]]]], allowed: tuple[str, ...]) -> Plan:
    """Per layer, the allowed algorithm with the lowest sum over backends of its median time."""
    return {name: min(allowed, key=lambda a: sum(float(np.median(v)) for v in by_algo[a].values()))
            for name, by_algo in timings.items()}


def candidate_plans(network: TractSeg, algorithm: str, batch_size: int, slice_size: int,
                    log: Callable[[str], None] = print) -> tuple[list[Plan], dict]:
    """Plans to try in order (the export keeps the first that passes the drift gate) and, for auto, the timing
    record for the manifest: {layer: {algorithm: {backend: median ms}}}."""
    if algorithm != "auto":
        return [uniform(network, algorithm)], {}
    timings = time_layers(network, batch_size, slice_size, log=log)
    plans = [fastest(timings, ALGORITHMS), fastest(timings, ("direct", "winograd2")), uniform(network, "direct")]
    unique = [p for i, p in enumerate(plans) if p not in plans[:i]]
    record = {name: {a: {b: round(1e3 * float(np.median(v)), 3) for b, v in by_backend.items()}
                     for a, by_backend in by_algo.items()} for name, by_algo in timings.items()}
    return unique, record


def summary(plan: Plan) -> str:
    counts = {a: sum(1 for v in plan.values() if v == a) for a in ALGORITHMS}
    return ", ".join(f"{a} x{n}" for a, n in counts.items() if n)


def live_drift(network: TractSeg, plan: Plan, batches: list[np.ndarray], references: list[np.ndarray]) -> float:
    """Max abs probability difference of the live model computed with `plan` from the direct live model's."""
    from export.model import slice_probabilities

    chosen = with_algorithms(network, plan)
    run = jax.jit(lambda x: slice_probabilities(chosen, x))
    with jax.default_device(jax.devices("cpu")[0]):
        return max(float(np.abs(np.asarray(run(b)) - r).max()) for b, r in zip(batches, references))


def passing_plans(network: TractSeg, algorithm: str, batch_size: int, slice_size: int, batches: list[np.ndarray],
                  references: list[np.ndarray], tolerance: float,
                  log: Callable[[str], None] = print) -> Iterator[tuple[Plan, dict]]:
    """The candidate plans whose live model is within the tolerance of the direct one on the check slices, in
    order, each with its record for the manifest (algorithm asked, per-layer timing for auto, live drift). The
    export traces the first and verifies its artifacts; when one of them drifts over the gate on a backend it
    takes the next. None within the tolerance: a DriftError naming the drift."""
    from export.verify import DriftError

    plans, timing = candidate_plans(network, algorithm, batch_size, slice_size, log)
    tried: dict[str, float] = {}
    for plan in plans:
        drift = live_drift(network, plan, batches, references) if set(plan.values()) != {"direct"} else 0.0
        tried[summary(plan)] = drift
        log(f"[export]   conv plan {summary(plan)}: live drift vs direct {drift:.2e}")
        if drift <= tolerance:
            yield plan, {"requested": algorithm, "live_drift_vs_direct": drift, "tried": dict(tried),
                         **({"layer_ms": timing} if timing else {})}
    raise DriftError(f"--conv-algorithm {algorithm}: no plan within the {tolerance:.0e} gate (live drift vs the "
                     f"direct convolution: {tried})")
