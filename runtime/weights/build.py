"""Build a bundle from upstream's checkpoint and the shipped weight-free graph: no JAX, no torch, no onnx package.

1. The checkpoint is read by the restricted reader (:mod:`runtime.weights.checkpoint`) and checked against the
   graph's slots (keys and shapes, as the export checks them).
2. ``model.onnx`` is the graph with each slot filled with its tensor as float32 (:mod:`runtime.weights.onnx_graph`):
   the bytes ``python -m export --formats onnx`` writes for the same weights. Read back, the written file must give
   the shipped graph (its sha256 checked on load) and each weight again.
3. Its outputs on two synthetic check batches are compared, on every installed ONNX backend, with the numpy
   float64 reference of the network (:mod:`runtime.weights.reference`): the export's gate (1e-5 on probabilities,
   1e-4 on raw outputs). The drift is recorded per backend, and the reference's outputs on the first batch become
   ``selfcheck.npz``, as the live model's do in an exported bundle.
4. The manifest is written with the runtime's own types, read back with the runtime's loader, and the bundle is
   opened as a run opens it (checksums, backend, self-check) before ``<out>.partial`` is renamed to ``<out>``.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from runtime.errors import ArtifactError
from runtime.host import package_versions
from runtime.io.atomic import atomic_target, write_text_atomic
from runtime.io.checksum import sha256_of
from runtime.models.bundles import Model
from runtime.models.manifest import (Artifact, FileEntry, Manifest, SelfCheck, WeightsInfo, load_manifest,
                                     network_signature)
from runtime.network.backends import is_installed, load_artifact, open_backend
from runtime.network.precision import self_check
from runtime.weights import onnx_graph
from runtime.weights.checkpoint import read_upstream_state_dict
from runtime.weights.reference import Reference, check_batches
from runtime.weights.shipped import Graph, check_filled, load_graph, slot_data

ONNX_FILE, SELF_CHECK_FILE = "model.onnx", "selfcheck.npz"
ONNX_BACKENDS = ("onnxruntime", "openvino")  # the backends that run the ONNX artifact (export/bundle.py's list)
TOLERANCE, LINEAR_TOLERANCE = 1e-5, 1e-4  # export/verify.py's gates: probabilities, raw outputs
VERSIONED = ("tractseg-aot", "numpy", "onnxruntime", "openvino")


def check_supported(model: Model) -> None:
    """TOM (four part models in one bundle) is not built here: one line saying what to use."""
    if model.parts:
        raise ArtifactError(f"--task {model.task}: a bundle of {len(model.parts)} part models is not built by "
                            "tractseg-aot-download yet; use python -m export --task TOM (the export toolchain)")


def build_bundle(model: Model, checkpoint: Path, out: Path, force: bool = False, graphs: Path | None = None,
                 log: Callable[[str], None] = print) -> Manifest:
    """Write the bundle of ``model`` from ``checkpoint`` (upstream's file) to ``out``; returns its manifest."""
    check_supported(model)
    if out.exists() and not force:
        raise ArtifactError(f"{out} exists (use --force to replace it)")
    graph = load_graph(model, graphs)
    started = time.perf_counter()
    state = read_upstream_state_dict(checkpoint)
    data = slot_data(graph, state, str(checkpoint))
    log(f"read {checkpoint} ({len(state)} tensors) in {time.perf_counter() - started:.1f} s")
    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        _build(model, graph, state, data, checkpoint, work, log)
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"bundle {out} written in {time.perf_counter() - started:.1f} s")
    return load_manifest(out)


def _build(model: Model, graph: Graph, state: dict[str, np.ndarray], data: dict, checkpoint: Path, work: Path,
           log: Callable[[str], None]) -> None:
    chunks = onnx_graph.fill(graph.onnx, data)
    with atomic_target(work / ONNX_FILE) as target, open(target, "wb") as stream:
        for piece in chunks.parts:
            stream.write(piece)
    check_filled(graph, (work / ONNX_FILE).read_bytes(), data)
    log(f"{ONNX_FILE}: graph {graph.path.name} (sha256 {graph.sha256[:12]}...) filled, {chunks.size} bytes")

    batch_size, _, size, _ = graph.description["input"]["shape"]
    started = time.perf_counter()
    batches = check_batches(batch_size, size)
    references = [Reference(state, model.upsample, model.linear)(batch) for batch in batches]
    log(f"numpy float64 reference on {len(batches)} x {batch_size} check slices in "
        f"{time.perf_counter() - started:.1f} s")
    tolerance = LINEAR_TOLERANCE if model.linear else TOLERANCE
    artifact = Artifact("onnx", "onnx", ONNX_FILE, ("cpu", "cuda"), (), (ONNX_FILE,),
                        details={"opset": graph.description["opset"], "exporter": graph.description["exporter"],
                                 "graph": {"file": graph.path.name, "sha256": graph.sha256,
                                           "exported_with": graph.description["exported_with"],
                                           "filled_by": "python -m runtime.weights (no JAX)"},
                                 "reference": "numpy float64 reference (runtime/weights/reference.py)"},
                        conv_algorithms={s["key"].split(".")[0]: "direct" for s in graph.slots
                                         if s["dims"][-1] == 3 and s["key"].endswith("weight")})
    drift = {}
    for backend in (b for b in ONNX_BACKENDS if is_installed(b)):
        run = load_artifact(backend, work / ONNX_FILE, artifact, "cpu")
        outputs = [np.asarray(run(batch), dtype=np.float64) for batch in batches]
        diffs = [np.abs(got - ref) for got, ref in zip(outputs, references)]
        figures = {"max_abs": float(max(d.max() for d in diffs)),
                   "mean_abs": float(sum(d.sum() for d in diffs) / sum(d.size for d in diffs)),
                   "slices": sum(len(b) for b in batches), "device": "cpu", "tolerance": tolerance,
                   "against": "numpy float64 reference"}
        if not figures["max_abs"] <= tolerance:
            raise ArtifactError(f"{ONNX_FILE} on {backend}: max abs output difference {figures['max_abs']:.2e} > "
                                f"{tolerance:.0e} against the reference network: the graph does not compute "
                                "upstream's network with these weights")
        drift[backend] = figures
        log(f"{backend}: max abs {figures['max_abs']:.2e}, mean abs {figures['mean_abs']:.2e} "
            f"vs the reference (gate {tolerance:.0e})")
    if not drift:
        raise ArtifactError("no ONNX backend installed to check the bundle: pip install 'tractseg-aot[onnxruntime]'")
    artifact = dataclasses.replace(artifact, backends=tuple(drift), drift=drift)

    stride = max(1, size // 36)
    with atomic_target(work / SELF_CHECK_FILE) as target:
        np.savez_compressed(target, input=batches[0].astype(np.float32),
                            reference=np.ascontiguousarray(references[0][:, :, ::stride, ::stride],
                                                           dtype=np.float32))
    check = SelfCheck(SELF_CHECK_FILE, stride, "synthetic check batch (seed 0); reference: the numpy float64 "
                                               "network (runtime/weights/reference.py), not the live JAX model")
    info, inputs, outputs = network_signature(model, batch_size, size)
    manifest = Manifest(
        root=work,
        model=info, input=inputs, output=outputs,
        contains=graph.description["contains"],
        weights=WeightsInfo(source=str(checkpoint), sha256=sha256_of(checkpoint), demo=False),
        artifacts=(artifact,),
        files={rel: FileEntry(size=(work / rel).stat().st_size, sha256=sha256_of(work / rel))
               for rel in (ONNX_FILE, SELF_CHECK_FILE)},
        versions=package_versions(VERSIONED, missing=None),
        exported_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        self_check=check)
    write_text_atomic(work / "manifest.json", json.dumps(manifest.to_dict(), indent=1) + "\n")
    _open_as_a_run_does(work, model, log)


def _open_as_a_run_does(bundle: Path, model: Model, log: Callable[[str], None]) -> None:
    """Read the manifest back with the runtime's loader and open each recorded backend as a run does: checksums
    verified, the artifact loaded, the self-check run."""
    manifest = load_manifest(bundle)
    manifest.check_request(model.task, model.tract_definition, model.n_classes)
    artifact = manifest.artifact("onnx")
    for backend in artifact.backends:
        figures = self_check(open_backend(backend, "cpu", manifest), manifest, artifact, backend, "cpu")
        log(f"self-check on {backend}: max abs {figures['max_abs']:.2e} (limit {figures['limit']:.2e})")
