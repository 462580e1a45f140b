"""Build one bundle directory: trace the live model into every requested format, verify each, write the manifest.

The bundle is built in `<out>.partial` and renamed into place only when every artifact passed, so a failed export
never leaves a bundle that looks usable.
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from export.conv_plan import passing_plans, summary
from export.dropout import dropout_artifact
from export.iree_compile import IREE_TARGETS, compile_vmfb, vmfb_file
from export.manifest_writer import write_manifest
from export.model import TractSeg, slice_probabilities
from export.onnx_model import ONNX_FILE, ONNX_OPSET, save_onnx
from export.precisions import MIN_DICE, build_precision, check_inputs, check_requested
from export.sample_inputs import check_batches
from export.savedmodel import SAVEDMODEL_DIR, save_savedmodel
from export.stablehlo import JAX_EXPORT_FILE, export_jax, module_name
from export.verify import TOLERANCE, DriftError, gpu_backends, verify_artifact
from export.winograd import with_algorithms
from runtime.models.bundles import Model
from runtime.models.manifest import Artifact, SelfCheck, WeightsInfo, host_cpu_flags, load_manifest

SELF_CHECK_FILE = "selfcheck.npz"

FORMATS = ("stablehlo", "iree", "savedmodel", "onnx")
PLATFORMS = ("cpu", "cuda")


@dataclass(frozen=True)
class ExportRequest:
    model: Model
    out: Path
    formats: tuple[str, ...] = FORMATS
    platforms: tuple[str, ...] = PLATFORMS
    batch_size: int = 4
    slice_size: int = 144
    force: bool = False
    tolerance: float = TOLERANCE  # max abs probability difference of every artifact vs the live model's CPU run
    precisions: tuple[str, ...] = ("fp32",)  # more: bf16, int8, fp16 (export/precisions.py), each Dice-gated
    min_dice: float = MIN_DICE
    conv_algorithm: str = "direct"  # direct | winograd2 | winograd4 | auto (export/conv_plan.py)


def traced_function(network: TractSeg) -> Callable[[jax.Array], jax.Array]:
    """The exported function, not jitted: jax2onnx must trace it afresh (a jit cache hit would hide the
    jax.nn calls it maps to single ONNX ops)."""
    def tractseg(slices: jax.Array) -> jax.Array:
        return slice_probabilities(network, slices)

    return tractseg


def partial_folder(out: Path, force: bool) -> Path:
    """``<out>.partial``, new and empty: a build writes there and renames it into place when everything passed.
    FileExistsError when ``out`` exists and not ``force``."""
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists (use --force to replace it)")
    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return work


def build_bundle(network: TractSeg, request: ExportRequest, weights: WeightsInfo,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Export, verify and write the bundle; returns a summary (times, sizes, drift)."""
    if network.n_classes != request.model.n_classes:
        raise ValueError(f"weights have {network.n_classes} classes but {request.model.name} needs "
                         f"{request.model.n_classes}")
    if request.slice_size % 16:
        raise ValueError(f"slice size {request.slice_size} is not divisible by 16")
    check_requested(request.precisions, request.formats)
    work = partial_folder(request.out, request.force)
    try:
        return _build(network, request, weights, work, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # gone after the rename; removes a failed build's leftovers


def _build(network: TractSeg, request: ExportRequest, weights: WeightsInfo, work: Path,
           log: Callable[[str], None]) -> dict[str, Any]:
    started = time.perf_counter()
    jitted = jax.jit(traced_function(network))  # the references: always the direct convolution
    timings: dict[str, float] = {}

    def step(name: str, action: Callable[[], list[Artifact]]) -> list[Artifact]:
        log(f"[export] {name} ...")
        t0 = time.perf_counter()
        made = action()
        timings[name] = round(time.perf_counter() - t0, 2)
        log(f"[export] {name} done in {timings[name]:.1f} s")
        return made

    batches = check_batches(request.batch_size, request.slice_size)
    references: list[np.ndarray] = []
    with jax.default_device(jax.devices("cpu")[0]):  # the reference is the CPU's fp32, also on a GPU host
        step("live model", lambda: references.extend(np.asarray(jitted(b)) for b in batches) or [])
    log(f"[export] conv algorithm {request.conv_algorithm} ...")
    plans = passing_plans(network, request.conv_algorithm, request.batch_size, request.slice_size, batches,
                          references, request.tolerance, log)
    while True:  # auto: the next candidate plan when an artifact drifts over the gate; else the error
        plan, conv_record = next(plans)
        log(f"[export] conv algorithm: {summary(plan)}")
        try:
            verified = trace_and_verify(with_algorithms(network, plan), request, work, batches, references, step,
                                        log)
            break
        except DriftError as error:
            if request.conv_algorithm != "auto":
                raise DriftError(f"--conv-algorithm {request.conv_algorithm}: {error}") from None
            log(f"[export] {summary(plan)}: {error}; trying the next plan")
            shutil.rmtree(work)
            work.mkdir()
    verified = [replace(a, conv_algorithms=plan, details={**a.details, "conv_algorithm": conv_record})
                for a in verified]
    if request.model.dropout and "onnx" in request.formats:  # --uncertainty's model (direct convolutions)
        verified += step("onnx-dropout", lambda: [dropout_artifact(
            network, request.batch_size, request.slice_size, work, request.platforms, batches, request.tolerance,
            log)])
    self_check = write_self_check(work, batches[0], references[0])
    write_manifest(work, request.model, request.batch_size, request.slice_size, weights, verified, self_check)
    extra = [p for p in request.precisions if p != "fp32"]
    if extra:
        manifest = load_manifest(work)
        check = check_inputs(batches, references, request.batch_size, request.slice_size)
        for precision in extra:
            verified += step(f"precision {precision}", lambda p=precision: [replace(build_precision(
                p, work, manifest, manifest.artifact("onnx"), check, request.min_dice, log), conv_algorithms=plan)])
        write_manifest(work, request.model, request.batch_size, request.slice_size, weights, verified, self_check)
    if request.out.exists():
        shutil.rmtree(request.out)
    work.rename(request.out)
    sizes = {a.id: sum((request.out / f).stat().st_size for f in a.files) for a in verified}
    total = round(time.perf_counter() - started, 1)
    for artifact_id, size in sizes.items():
        log(f"[export] {artifact_id:<16} {size / 1e6:8.1f} MB")
    log(f"[export] bundle {request.out} written in {total:.1f} s")
    return {"out": str(request.out), "seconds": total, "step_seconds": timings, "sizes": sizes,
            "drift": {a.id: a.drift for a in verified}}


def trace_and_verify(network: TractSeg, request: ExportRequest, work: Path, batches: list[np.ndarray],
                     references: list[np.ndarray], step: Callable, log: Callable[[str], None]) -> list[Artifact]:
    """Trace the network into every requested format in `work` and verify each artifact against the references
    (DriftError over the tolerance)."""
    spec = jax.ShapeDtypeStruct((request.batch_size, 9, request.slice_size, request.slice_size), jnp.float32)
    fn = traced_function(network)
    jitted = jax.jit(fn)
    artifacts: list[Artifact] = []
    if "stablehlo" in request.formats or "iree" in request.formats:
        artifacts += step("stablehlo", lambda: stablehlo_artifacts(jitted, spec, work, request.platforms))
    if "iree" in request.formats:
        artifacts += step("iree", lambda: iree_artifacts(jitted, work, artifacts, request.platforms))
    if "savedmodel" in request.formats:
        artifacts += step("savedmodel", lambda: savedmodel_artifacts(network, spec, work, request.platforms))
    if "onnx" in request.formats:
        artifacts += step("onnx", lambda: onnx_artifacts(fn, spec, work, request.platforms))

    verified = []
    for artifact in artifacts:
        missing_flags = sorted(set(artifact.details.get("requires_cpu_flags", ())) - host_cpu_flags())
        on_cpu = bool(artifact.backends) and "cpu" in artifact.platforms and not missing_flags
        if not on_cpu and not gpu_backends(artifact):
            reason = ("source module, run through IREE" if not artifact.backends else
                      "GPU artifact: this export host has no GPU that its backend can use"
                      if "cpu" not in artifact.platforms else
                      f"needs CPU flags this export host lacks ({', '.join(missing_flags)}): verify on such a host")
            verified.append(replace(artifact, drift={"not_run": {"reason": reason}}))
            log(f"[export] {artifact.id}: not run here ({reason})")
            continue
        verified += step(f"verify {artifact.id}", lambda a=artifact, c=on_cpu: [replace(a, drift=verify_artifact(
            work, a, batches, references, request.tolerance, cpu=c))])
        for backend, figures in verified[-1].drift.items():
            if "max_abs" in figures:
                log(f"[export]   {artifact.id} on {backend}: max abs {figures['max_abs']:.2e}, "
                    f"mean abs {figures['mean_abs']:.2e}")
    return verified


def write_self_check(work: Path, batch: np.ndarray, reference: np.ndarray) -> SelfCheck:
    """The runtime's self-check batch: the first check batch and its live-model outputs at every stride-th pixel
    (stride 4 at S=144: 1.5 MB of reference for 72 bundles)."""
    stride = max(1, batch.shape[-1] // 36)
    np.savez_compressed(work / SELF_CHECK_FILE, input=batch.astype(np.float32),
                        reference=np.ascontiguousarray(reference[:, :, ::stride, ::stride], dtype=np.float32))
    return SelfCheck(SELF_CHECK_FILE, stride, "the export's first check batch (see export/sample_inputs.py)")


def stablehlo_artifacts(fn, spec, work: Path, platforms: tuple[str, ...]) -> list[Artifact]:
    modules = export_jax(fn, spec, work, platforms)
    made = [Artifact("jax-export", "jaxexport", JAX_EXPORT_FILE, platforms, ("jax",), (JAX_EXPORT_FILE,))]
    for name, served in modules.items():
        made.append(Artifact("stablehlo" if len(modules) == 1 else f"stablehlo-{served[0]}", "stablehlo", name,
                             served, (), (name,), details={"module": module_name(fn), "function": "main"}))
    return made


def iree_artifacts(fn, work: Path, sources: list[Artifact], platforms: tuple[str, ...]) -> list[Artifact]:
    made = []
    for target in IREE_TARGETS:
        platform = IREE_TARGETS[target].platform
        if platform not in platforms:
            continue
        source = next(a for a in sources if a.format == "stablehlo" and platform in a.platforms)
        flags = compile_vmfb(work / source.path, target, work / vmfb_file(target))
        made.append(Artifact(f"iree-{target}", "vmfb", vmfb_file(target), (platform,), ("iree",),
                             (vmfb_file(target),),
                             details={"module": module_name(fn), "function": "main", "compiler_flags": flags,
                                      "requires_cpu_flags": list(IREE_TARGETS[target].cpu_flags)}))
    return made


def savedmodel_artifacts(network: TractSeg, spec, work: Path, platforms: tuple[str, ...]) -> list[Artifact]:
    files = save_savedmodel(network, spec, work, platforms)
    return [Artifact("savedmodel", "savedmodel", SAVEDMODEL_DIR, platforms, ("tensorflow",), tuple(files),
                     details={"signature": "serving_default", "serialisation": "jax2tf native"})]


def onnx_artifacts(fn, spec, work: Path, platforms: tuple[str, ...]) -> list[Artifact]:
    files = save_onnx(fn, spec, work)
    return [Artifact("onnx", "onnx", ONNX_FILE, platforms, ("onnxruntime", "openvino"), tuple(files),
                     details={"opset": ONNX_OPSET, "exporter": "jax2onnx"})]
