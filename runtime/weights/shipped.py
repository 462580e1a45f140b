"""The weight-free graphs shipped in the package (``runtime/weights/graphs/<name>.onnx`` + ``<name>.json``, made by
``python -m export.weight_free``) and how a state_dict fills one.

``<name>.json`` says which upstream state_dict key fills which slot of the graph (the key's shape upstream and the
slot's dims: the same float32 values, in the same order; a bias of shape (C,) fills a (1, C, 1, 1) initializer),
the graph's geometry and what it computes (the manifest's ``function``), the exporter's versions and the graph
file's size and sha256, checked before the graph is used. A tract_segmentation model has a second graph,
``<name>_dropout``: the dropout model of ``--uncertainty`` (export/dropout.py), whose ``.json`` also describes
its mask input (``function`` and ``dropout``, the manifest's details of that artifact).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import ArtifactError, TractSegError
from runtime.io.atomic import atomic_target
from runtime.models.bundles import Model
from runtime.models.manifest import DROPOUT_FUNCTION
from runtime.weights import onnx_graph

GRAPHS_DIR = Path(__file__).resolve().parent / "graphs"
GRAPH_FORMAT = 1


class WeightsError(TractSegError):
    """Weights that do not fit the model (keys, shapes); one line naming the file."""


def graph_name(model: Model, dropout: bool = False) -> str:
    """The graph of a model: its name (TOM's four parts share one graph, ``TOM_part``); ``dropout``: its dropout
    model's, ``<name>_dropout``."""
    return ("TOM_part" if model.part else model.name) + ("_dropout" if dropout else "")


@dataclass(frozen=True)
class Graph:
    name: str
    path: Path  # the .onnx
    onnx: bytes  # the weight-free graph
    description: dict[str, Any]  # the .json

    @property
    def sha256(self) -> str:
        return self.description["graph_file"]["sha256"]

    @property
    def slots(self) -> list[dict[str, Any]]:
        return self.description["slots"]


def load_graph(model: Model, directory: Path | None = None, dropout: bool = False) -> Graph:
    """The weight-free graph of ``model`` (``dropout``: of its dropout model) from ``directory`` (default: the
    package's), its size, sha256 and slots checked against its description; ArtifactError (one line) otherwise."""
    name = graph_name(model, dropout)
    folder = GRAPHS_DIR if directory is None else Path(directory)
    described = folder / f"{name}.json"
    if not described.is_file():
        shipped = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
        raise ArtifactError(f"{described}: no weight-free graph for {name} (there: {', '.join(shipped) or 'none'}; "
                            "make one with python -m export.weight_free)")
    try:
        description = json.loads(described.read_text())
        entry = description["graph_file"]
        path = folder / Path(entry["path"]).name
        graph = path.read_bytes()
        if description["format_version"] != GRAPH_FORMAT or description["graph"] != name:
            raise ArtifactError(f"{described}: format {description['format_version']} for graph "
                                f"{description['graph']!r}, expected format {GRAPH_FORMAT} for {name!r}")
        if len(graph) != entry["size"] or hashlib.sha256(graph).hexdigest() != entry["sha256"]:
            raise ArtifactError(f"{path}: size or sha256 differs from {described.name} (damaged graph file)")
        found = [(s.id, list(s.dims)) for s in onnx_graph.slots(graph)]
        if found != [(s["slot"], s["dims"]) for s in description["slots"]]:
            raise ArtifactError(f"{path}: its weight slots differ from {described.name}")
        if description["n_classes"] != model.n_classes or description["linear"] != model.linear or \
                description["upsample"] != model.upsample:
            raise ArtifactError(f"{described}: graph for {description['n_classes']} classes (linear "
                                f"{description['linear']}, upsample {description['upsample']}), not {name}'s")
        if (description.get("function") == DROPOUT_FUNCTION) != dropout:
            raise ArtifactError(f"{described}: function {description.get('function', 'plain')!r}, not {name}'s")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ArtifactError(f"{described}: unreadable weight-free graph ({error})") from None
    return Graph(name, path, graph, description)


def slot_data(graph: Graph, state: dict[str, np.ndarray], source: str) -> dict[str, memoryview]:
    """{slot id: its little-endian float32 bytes} from an upstream-named state_dict, strict on keys and shapes like
    export/weights.py's ``model_from_state_dict`` (the JAX port's load: each tensor as float32, nothing else)."""
    shapes = {s["key"]: tuple(s["shape"]) for s in graph.slots}
    if "conv_5.bias" not in state:
        raise WeightsError(f"{source}: missing key 'conv_5.bias' (not a TractSeg UNet_Pytorch_DeepSup state_dict)")
    missing, unexpected = sorted(set(shapes) - set(state)), sorted(set(state) - set(shapes))
    n_classes = int(np.shape(state["conv_5.bias"])[0])
    if n_classes != shapes["conv_5.bias"][0]:
        raise WeightsError(f"{source}: weights have {n_classes} classes but {graph.name} needs "
                           f"{shapes['conv_5.bias'][0]}")
    if missing or unexpected:
        raise WeightsError(f"{source}: state_dict keys differ from UNet_Pytorch_DeepSup "
                           f"(missing: {missing[:5]}{'...' if len(missing) > 5 else ''}; "
                           f"unexpected: {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})")
    for key, shape in shapes.items():
        if tuple(np.shape(state[key])) != shape:
            raise WeightsError(f"{source}: key {key!r} has shape {tuple(np.shape(state[key]))}, expected {shape} "
                               f"(for {n_classes} classes)")
    return {s["slot"]: np.ascontiguousarray(state[s["key"]], dtype="<f4").reshape(s["dims"]).data.cast("B")
            for s in graph.slots}


def fill(graph: Graph, state: dict[str, np.ndarray], source: str) -> onnx_graph.Chunks:
    """The exported ONNX for these weights: the graph with every slot filled."""
    return onnx_graph.fill(graph.onnx, slot_data(graph, state, source))


def write_filled(graph: Graph, data: dict[str, memoryview], path: Path) -> int:
    """Write the graph with every slot filled to ``path`` (atomically), then check the file: see
    :func:`check_filled`. Returns its size."""
    chunks = onnx_graph.fill(graph.onnx, data)
    with atomic_target(path) as target, open(target, "wb") as stream:
        for piece in chunks.parts:
            stream.write(piece)
    check_filled(graph, path.read_bytes(), data)
    return chunks.size


def check_filled(graph: Graph, written: bytes, data: dict[str, memoryview]) -> None:
    """``written`` (the model file as written) is the graph and these weights, byte for byte: taking the weights
    back out gives the shipped graph, and each slot holds its tensor."""
    stripped, taken = onnx_graph.strip(written, lambda slot: slot.id in data)
    if stripped != graph.onnx or set(taken) != set(data) or any(taken[k][1] != data[k] for k in data):
        raise ArtifactError(f"the written ONNX is not the graph {graph.path.name} with these weights")
