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
4. A tract_segmentation model also gets ``model_dropout.onnx``, the dropout model of ``--uncertainty`` (its own
   shipped graph, ``<name>_dropout``, filled from the same state_dict: the bytes the export's
   export/dropout.py writes), checked the same way on each check batch with a mask of ones and two drawn masks
   (seed 0, as the export checks it) against the reference with pool_4 multiplied by the same mask.
5. The manifest is written with the runtime's own types, read back with the runtime's loader, and the bundle is
   opened as a run opens it (checksums, backend, self-check; the dropout model with a mask of ones) before
   ``<out>.partial`` is renamed to ``<out>``.
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
from runtime.models.manifest import (DROPOUT_FUNCTION, Artifact, FileEntry, Manifest, SelfCheck, WeightsInfo,
                                     load_manifest, network_signature)
from runtime.network.backends import is_installed, load_artifact, open_backend
from runtime.network.dropout import OnesMask, bottleneck_shape, check_masks
from runtime.network.precision import self_check
from runtime.weights.checkpoint import read_upstream_state_dict
from runtime.weights.reference import Reference, check_batches
from runtime.weights.shipped import Graph, load_graph, slot_data, write_filled

ONNX_FILE, DROPOUT_ONNX_FILE, SELF_CHECK_FILE = "model.onnx", "model_dropout.onnx", "selfcheck.npz"
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
    dropout_graph = load_graph(model, graphs, dropout=True) if model.dropout else None
    started = time.perf_counter()
    state = read_upstream_state_dict(checkpoint)
    data = slot_data(graph, state, str(checkpoint))
    dropout = None if dropout_graph is None else (dropout_graph, slot_data(dropout_graph, state, str(checkpoint)))
    log(f"read {checkpoint} ({len(state)} tensors) in {time.perf_counter() - started:.1f} s")
    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        _build(model, graph, state, data, dropout, checkpoint, work, log)
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"bundle {out} written in {time.perf_counter() - started:.1f} s")
    return load_manifest(out)


def _build(model: Model, graph: Graph, state: dict[str, np.ndarray], data: dict, dropout: tuple[Graph, dict] | None,
           checkpoint: Path, work: Path, log: Callable[[str], None]) -> None:
    written = write_filled(graph, data, work / ONNX_FILE)
    log(f"{ONNX_FILE}: graph {graph.path.name} (sha256 {graph.sha256[:12]}...) filled, {written} bytes")

    batch_size, _, size, _ = graph.description["input"]["shape"]
    started = time.perf_counter()
    batches = check_batches(batch_size, size)
    reference = Reference(state, model.upsample, model.linear)
    references = [reference(batch) for batch in batches]
    log(f"numpy float64 reference on {len(batches)} x {batch_size} check slices in "
        f"{time.perf_counter() - started:.1f} s")
    tolerance = LINEAR_TOLERANCE if model.linear else TOLERANCE
    artifact = Artifact("onnx", "onnx", ONNX_FILE, ("cpu", "cuda"), (), (ONNX_FILE,), details=_details(graph),
                        conv_algorithms={s["key"].split(".")[0]: "direct" for s in graph.slots
                                         if s["dims"][-1] == 3 and s["key"].endswith("weight")})
    artifacts = [_verified(artifact, work, [(batch,) for batch in batches], references, tolerance, log)]
    if dropout is not None:
        artifacts.append(_dropout_artifact(*dropout, reference, batches, references, work, tolerance, log))

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
        artifacts=tuple(artifacts),
        files={rel: FileEntry(size=(work / rel).stat().st_size, sha256=sha256_of(work / rel))
               for rel in (*(f for a in artifacts for f in a.files), SELF_CHECK_FILE)},
        versions=package_versions(VERSIONED, missing=None),
        exported_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        self_check=check)
    write_text_atomic(work / "manifest.json", json.dumps(manifest.to_dict(), indent=1) + "\n")
    _open_as_a_run_does(work, model, log)


def _details(graph: Graph) -> dict:
    """An ONNX artifact's details: the opset, the exporter, the graph it was filled from, the reference."""
    return {"opset": graph.description["opset"], "exporter": graph.description["exporter"],
            "graph": {"file": graph.path.name, "sha256": graph.sha256,
                      "exported_with": graph.description["exported_with"],
                      "filled_by": "python -m runtime.weights (no JAX)"},
            "reference": "numpy float64 reference (runtime/weights/reference.py)"}


def _verified(artifact: Artifact, work: Path, inputs: list[tuple[np.ndarray, ...]], references: list[np.ndarray],
              tolerance: float, log: Callable[[str], None], **noted: str) -> Artifact:
    """``artifact`` run on every installed ONNX backend on ``inputs`` against the reference's outputs: its drift
    recorded per backend (with ``noted``), those backends its backends; ArtifactError over ``tolerance``."""
    drift = {}
    for backend in (b for b in ONNX_BACKENDS if is_installed(b)):
        run = load_artifact(backend, work / artifact.path, artifact, "cpu")
        max_abs, total, count = 0.0, 0.0, 0
        for args, ref in zip(inputs, references):
            diff = np.abs(np.asarray(run(*args), dtype=np.float64) - ref)
            max_abs, total, count = max(max_abs, float(diff.max())), total + float(diff.sum()), count + diff.size
        figures = {"max_abs": max_abs, "mean_abs": total / count, "slices": sum(len(a[0]) for a in inputs),
                   "device": "cpu", "tolerance": tolerance, "against": "numpy float64 reference", **noted}
        if not max_abs <= tolerance:
            raise ArtifactError(f"{artifact.path} on {backend}: max abs output difference {max_abs:.2e} > "
                                f"{tolerance:.0e} against the reference network: the graph does not compute "
                                "upstream's network with these weights")
        drift[backend] = figures
        log(f"{artifact.path} on {backend}: max abs {max_abs:.2e}, mean abs {figures['mean_abs']:.2e} "
            f"vs the reference (gate {tolerance:.0e})")
    if not drift:
        raise ArtifactError("no ONNX backend installed to check the bundle: pip install 'tractseg-aot[onnxruntime]'")
    return dataclasses.replace(artifact, backends=tuple(drift), drift=drift)


def _dropout_artifact(graph: Graph, data: dict, reference: Reference, batches: list[np.ndarray],
                      references: list[np.ndarray], work: Path, tolerance: float,
                      log: Callable[[str], None]) -> Artifact:
    """``model_dropout.onnx`` written and verified: each check batch with a mask of ones (the reference is the
    plain network's: x * 1.0 is exact) and two drawn masks (seed 0, export/dropout.py's check masks)."""
    written = write_filled(graph, data, work / DROPOUT_ONNX_FILE)
    log(f"{DROPOUT_ONNX_FILE}: graph {graph.path.name} (sha256 {graph.sha256[:12]}...) filled, {written} bytes")
    described = graph.description
    batch_size, _, size, _ = described["input"]["shape"]
    shape = tuple(described["dropout"]["mask_shape"])
    if described["function"] != DROPOUT_FUNCTION or shape != bottleneck_shape(batch_size, size):
        raise ArtifactError(f"{graph.path.name}: not a dropout model of pool_4 ({described['function']!r}, mask "
                            f"{shape}) for slices {described['input']['shape']}")
    masks = check_masks(shape)
    inputs = [(batch, mask) for batch in batches for mask in masks]
    started = time.perf_counter()
    outputs = [plain if index == 0 else reference(batch, mask)
               for batch, plain in zip(batches, references) for index, mask in enumerate(masks)]
    log(f"numpy float64 reference of the dropout model on {len(inputs) - len(batches)} drawn masks in "
        f"{time.perf_counter() - started:.1f} s")
    artifact = Artifact("onnx-dropout", "onnx", DROPOUT_ONNX_FILE, ("cpu", "cuda"), (), (DROPOUT_ONNX_FILE,),
                        details={**_details(graph), "function": described["function"],
                                 "dropout": described["dropout"]})
    return _verified(artifact, work, inputs, outputs, tolerance, log,
                     masks="ones and 2 drawn (seed 0) per check batch")


def _open_as_a_run_does(bundle: Path, model: Model, log: Callable[[str], None]) -> None:
    """Read the manifest back with the runtime's loader and open each recorded backend as a run does: checksums
    verified, the artifact loaded, the self-check run (the dropout model's with a mask of ones, as
    ``--uncertainty`` checks it)."""
    manifest = load_manifest(bundle)
    manifest.check_request(model.task, model.tract_definition, model.n_classes)
    for dropout in (False, True) if model.dropout else (False,):
        artifact = manifest.artifact("onnx-dropout" if dropout else "onnx")
        for backend in artifact.backends:
            run = open_backend(backend, "cpu", manifest, dropout=dropout)
            if dropout:
                run = OnesMask(run, artifact.mask_shape)
            figures = self_check(run, manifest, artifact, backend, "cpu")
            log(f"self-check on {backend}{' (dropout model, mask of ones)' if dropout else ''}: max abs "
                f"{figures['max_abs']:.2e} (limit {figures['limit']:.2e})")
