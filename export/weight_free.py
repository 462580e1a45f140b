"""python -m export.weight_free: the weight-free ONNX graphs that `runtime.weights` fills with upstream's weights.

  python -m export.weight_free [--models all|NAME,...] [--slice-size 144] [--batch-size 4] [--out DIR] [--check]

For each model the ONNX is exported exactly as `python -m export --formats onnx` exports it (export/onnx_model.py,
the direct convolution), from seeded random weights; each weight tensor is found in it by its bytes (an initializer,
or the value of a Constant node: jax2onnx keeps the ConvTranspose biases there) and taken out
(runtime/weights/onnx_graph.py). A model with upstream's dropout layer (tract_segmentation) gets a second graph,
``<name>_dropout``: its dropout model exported as export/dropout.py exports it (the mask as second input), checked
the same way. Written per graph: ``<name>.onnx`` (the graph: every name, shape and dtype kept,
no weight bytes) and ``<name>.json`` (which upstream state_dict key fills which slot, the geometry, the exporter's
versions, the graph's sha256). Checked before anything is written: filling the graph with the weights it was made
from gives the exported ONNX back byte for byte, for every seed given (default two: the graph does not depend on
the weights' values). ``--check``: write nothing, exit 1 unless the files in --out are what this would write.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from export.bundle import traced_function
from export.dropout import DROPOUT_ONNX_FILE, dropout_details, save_dropout_onnx
from export.manifest_writer import contains
from export.onnx_model import ONNX_FILE, ONNX_OPSET, save_onnx
from export.weights import model_from_state_dict, random_state_dict
from runtime.host import package_versions
from runtime.io.atomic import write_bytes_atomic, write_text_atomic
from runtime.models.bundles import MODELS, Model
from runtime.models.manifest import INPUT_NAME, OUTPUT_NAME, PEAK_CHANNELS
from runtime.weights import onnx_graph
from runtime.weights.shipped import GRAPHS_DIR, GRAPH_FORMAT, graph_name

EXPORTER_PACKAGES = ("jax", "jaxlib", "equinox", "jax2onnx", "onnx")


def graph_models() -> dict[str, tuple[Model, bool]]:
    """(model, dropout) by graph name: the models runtime.weights builds (not TOM's part models: their bundle is
    not built there), and the dropout model of each that has one."""
    return {graph_name(model, dropout): (model, dropout) for model in MODELS if not model.part
            for dropout in ((False, True) if model.dropout else (False,))}


def exported_onnx(model: Model, state: dict[str, np.ndarray], batch_size: int, slice_size: int,
                  dropout: bool = False) -> bytes:
    """The ONNX python -m export writes for these weights: model.onnx, or (``dropout``) model_dropout.onnx."""
    network = model_from_state_dict(state, "<random>", model.upsample, model.linear)
    spec = jax.ShapeDtypeStruct((batch_size, PEAK_CHANNELS, slice_size, slice_size), jnp.float32)
    with tempfile.TemporaryDirectory() as work:
        if dropout:
            save_dropout_onnx(network, batch_size, slice_size, Path(work))
        else:
            save_onnx(traced_function(network), spec, Path(work))
        return (Path(work) / (DROPOUT_ONNX_FILE if dropout else ONNX_FILE)).read_bytes()


def weight_free(model: Model, batch_size: int, slice_size: int, seeds: tuple[int, ...],
                log=print, dropout: bool = False) -> tuple[bytes, dict]:
    """(the graph, its description) for one model (``dropout``: its dropout model); ValueError when the checks
    fail."""
    name = graph_name(model, dropout)
    graph, slots = None, None
    for seed in seeds:
        state = random_state_dict(seed, model.n_classes)
        exported = exported_onnx(model, state, batch_size, slice_size, dropout)
        by_bytes = {np.ascontiguousarray(v, dtype="<f4").tobytes(): key for key, v in state.items()}
        if len(by_bytes) != len(state):
            raise ValueError(f"seed {seed}: two weight tensors are equal; pick another seed")
        _, tensors = onnx_graph.strip(exported, lambda slot: True)
        found = {slot_id: by_bytes[bytes(raw)] for slot_id, (_, raw) in tensors.items() if bytes(raw) in by_bytes}
        if sorted(found.values()) != sorted(state):
            missing = sorted(set(state) - set(found.values()))
            raise ValueError(f"{name}: weights not found as raw float32 bytes in the exported ONNX "
                             f"(transformed by the exporter?): {missing[:5]}")
        stripped, taken = onnx_graph.strip(exported, lambda slot: slot.id in found)
        data = {slot_id: np.ascontiguousarray(state[key], dtype="<f4").tobytes() for slot_id, key in found.items()}
        if onnx_graph.fill(stripped, data).tobytes() != exported:
            raise ValueError(f"{name}: filling the graph does not give the exported ONNX back")
        described = [{"slot": slot.id, "key": found[slot.id], "dims": list(slot.dims),
                      "shape": list(np.shape(state[found[slot.id]]))} for slot in onnx_graph.slots(stripped)]
        if graph is not None and (stripped != graph or described != slots):
            raise ValueError(f"{name}: the graph of seed {seed} differs from seed {seeds[0]}'s: the "
                             "exported ONNX depends on the weights' values beyond the weight tensors")
        graph, slots = stripped, described
        log(f"[weight_free] {name} seed {seed}: {len(exported)} bytes exported, graph "
            f"{len(stripped)} bytes, {len(described)} weight slots, round trip exact")
    return graph, {
        "format_version": GRAPH_FORMAT, "graph": name,
        "graph_file": {"path": f"{name}.onnx", "size": len(graph),
                       "sha256": hashlib.sha256(graph).hexdigest()},
        "n_classes": model.n_classes, "linear": model.linear, "upsample": model.upsample,
        "input": {"name": INPUT_NAME, "shape": [batch_size, PEAK_CHANNELS, slice_size, slice_size]},
        "output": {"name": OUTPUT_NAME, "shape": [batch_size, model.n_classes, slice_size, slice_size]},
        **(dropout_details(batch_size, slice_size) if dropout else {}),
        "contains": contains(model), "opset": ONNX_OPSET, "exporter": "jax2onnx",
        "exported_with": {k: v for k, v in package_versions(EXPORTER_PACKAGES, "not installed").items()
                          if k != "python"},
        "checked_with_seeds": list(seeds), "slots": slots,
    }


def describe_json(description: dict) -> str:
    """The description as JSON, one slot per line."""
    slots = ",\n  ".join(json.dumps(slot) for slot in description["slots"])
    text = json.dumps({**description, "slots": "SLOTS"}, indent=1)
    return text.replace('"slots": "SLOTS"', f'"slots": [\n  {slots}\n ]') + "\n"


def _comparable(content: bytes) -> bytes | dict:
    """What --check compares: a graph's bytes; a description without the seeds it was checked with."""
    try:
        return {k: v for k, v in json.loads(content).items() if k != "checked_with_seeds"}
    except (ValueError, UnicodeDecodeError):
        return content


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.weight_free", description=__doc__.strip().splitlines()[0])
    p.add_argument("--models", default="all", help=f"comma list of {', '.join(graph_models())}, or all")
    p.add_argument("--slice-size", type=int, default=144)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seeds", default="0,1", help="random weights to export and check with (two or more prove "
                                                  "the graph does not depend on the weights)")
    p.add_argument("--out", type=Path, default=GRAPHS_DIR)
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 unless --out holds these files")
    args = p.parse_args(argv)
    models = graph_models()
    names = list(models) if args.models == "all" else [m for m in args.models.split(",") if m]
    unknown = [n for n in names if n not in models]
    if unknown or not names:
        p.error(f"unknown model {unknown} (choose from {', '.join(models)})")
    seeds = tuple(int(s) for s in args.seeds.split(",") if s)
    stale = []
    for name in names:
        model, dropout = models[name]
        graph, description = weight_free(model, args.batch_size, args.slice_size, seeds, dropout=dropout)
        files = {args.out / f"{name}.onnx": graph, args.out / f"{name}.json": describe_json(description).encode()}
        for path, content in files.items():
            if args.check:
                if not path.is_file() or _comparable(path.read_bytes()) != _comparable(content):
                    stale.append(str(path))
            elif not path.is_file() or path.read_bytes() != content:
                (write_bytes_atomic if path.suffix == ".onnx" else write_text_atomic)(
                    path, content if path.suffix == ".onnx" else content.decode())
                print(f"[weight_free] wrote {path} ({len(content)} bytes)")
            else:
                print(f"[weight_free] {path} unchanged")
    if stale:
        print(f"export.weight_free: error: not what the exporter makes now: {', '.join(stale)} (regenerate: "
              f"python -m export.weight_free)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
