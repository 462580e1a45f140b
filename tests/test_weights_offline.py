"""python -m runtime.weights (tractseg-aot-download): upstream's checkpoint to a verified ONNX bundle with the deploy
install alone. Its ONNX (and a tract_segmentation bundle's dropout model, model_dropout.onnx) is byte for byte what
``python -m export`` writes for the same weights; the checkpoint reader runs no code from the file; the whole
command runs with jax, torch and export/ blocked, and tractseg-aot runs on the bundle it made (--uncertainty too).

Fast: S=16, batch 3 (weight-free graphs made for that geometry with python -m export.weight_free and cached like the
test bundles). Full size: the shipped S=144 graph is what the exporter makes now (one export, ~15-25 s).
"""
from __future__ import annotations

import collections
import hashlib
import io
import os
import pickle
import shutil
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest

from benchmarks.bundle import EXPORT_INPUTS
from runtime.errors import ArtifactError
from runtime.models.bundles import MODELS, model_for
from runtime.models.manifest import load_manifest
from runtime.weights.__main__ import main
from runtime.weights.checkpoint import CheckpointError, read_checkpoint, read_upstream_state_dict
from runtime.weights.shipped import GRAPHS_DIR, WeightsError, graph_name, load_graph, slot_data
from tests.no_jax import run_module, run_python
from tests.run_support import (REPO, SMALL_BATCH, SMALL_SIZE, build_bundle, bundle_cache, check_one_error,
                               files_under, save_peaks, synthetic_peaks)

torch = pytest.importorskip("torch")  # writes the checkpoints in upstream's format

MODEL = model_for("tract_segmentation")
SEED = 5  # the checkpoint's random weights (the graphs are made from seed 0: other weights fill them)
PREFIX = "tractseg-aot-download: error: "


def random_state(seed: int, n_classes: int = 72) -> dict[str, np.ndarray]:
    from export.weights import random_state_dict

    return random_state_dict(seed, n_classes)


def torch_save(state: dict, path: Path, legacy: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = collections.OrderedDict((k, torch.from_numpy(np.asarray(v))) for k, v in state.items())
    tensors._metadata = collections.OrderedDict({"": {"version": 1}})  # as nn.Module.state_dict() has
    torch.save({"unet": tensors}, path, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.fixture(scope="session")
def small_graphs(request) -> Path:
    """Weight-free graphs at S=16, batch 3, from the exporter (python -m export.weight_free), cached by the
    export sources: tract_segmentation's and its dropout model's."""
    key = hashlib.sha256()
    for path in EXPORT_INPUTS + sorted((REPO / "runtime" / "weights").glob("*.py")):
        key.update(path.read_bytes())
    out = bundle_cache(request.config) / f"weight-free-S{SMALL_SIZE}-B{SMALL_BATCH}-{key.hexdigest()[:12]}"
    if not (out / f"{graph_name(MODEL, dropout=True)}.json").is_file():
        done = subprocess.run([sys.executable, "-m", "export.weight_free", "--models",
                               f"{MODEL.name},{graph_name(MODEL, dropout=True)}", "--seeds", "0",
                               "--slice-size", str(SMALL_SIZE), "--batch-size", str(SMALL_BATCH), "--out", str(out)],
                              cwd=REPO, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def checkpoint(request) -> Path:
    """Upstream's file for tract_segmentation, in upstream's format (torch.save's legacy stream, as the Zenodo
    files), random weights; kept in the cache so the export's bundle made from it is cached too."""
    path = bundle_cache(request.config) / f"weights-offline-seed{SEED}" / MODEL.local_name
    if not path.is_file():
        torch_save(random_state(SEED), path.with_name("partial.npz"), legacy=True).rename(path)
    return path


# python -m runtime.weights ARGS, then which frameworks (and the onnx package) it imported
RUN_AND_LIST = """
import runpy
sys.argv = ["runtime.weights"] + sys.argv[1:]
try:
    runpy.run_module("runtime.weights", run_name="__main__")
except SystemExit as exit:
    print("exit", exit.code)
print("imported", sorted({m.split(".")[0] for m in sys.modules} & {"onnx", "jax", "torch", "export", "tractseg"}))
"""


@pytest.fixture(scope="session")
def offline_bundle(tmp_path_factory, checkpoint, small_graphs) -> Path:
    """The bundle python -m runtime.weights --offline makes, in a subprocess where jax, torch, export/ and tractseg
    cannot be imported (tests/no_jax.py); the onnx package is not imported either."""
    out = tmp_path_factory.mktemp("offline") / "bundle"
    done = run_python(RUN_AND_LIST, "--offline", str(checkpoint.parent), "--task", "tract_segmentation", "--out",
                      str(out), "--graphs", str(small_graphs), timeout=600)
    assert done.returncode == 0 and "exit 0\nimported []\n" in done.stdout, done.stdout[-2000:] + done.stderr[-3000:]
    assert "self-check on onnxruntime" in done.stdout and done.stderr == ""
    return out


def test_onnx_is_byte_identical_to_the_jax_export(request, offline_bundle, checkpoint):
    exported = build_bundle(bundle_cache(request.config), weights=checkpoint, size=SMALL_SIZE,
                            batch_size=SMALL_BATCH)
    ours, theirs = (offline_bundle / "model.onnx").read_bytes(), (exported / "model.onnx").read_bytes()
    assert len(ours) == len(theirs) and ours == theirs
    manifest, reference = load_manifest(offline_bundle), load_manifest(exported)
    assert manifest.files["model.onnx"] == reference.files["model.onnx"]
    assert (manifest.weights.sha256, manifest.weights.demo) == (reference.weights.sha256, False)
    assert (manifest.model, manifest.input, manifest.output, manifest.contains) == \
        (reference.model, reference.input, reference.output, reference.contains)
    artifact = manifest.artifact("onnx")
    assert artifact.conv_algorithms == reference.artifact("onnx").conv_algorithms
    assert 0 < artifact.drift["onnxruntime"]["max_abs"] < 1e-5  # vs the numpy float64 reference
    assert "numpy" in manifest.self_check.source and not {"jax", "torch"} & set(manifest.versions)


def test_dropout_model_is_byte_identical_to_the_jax_export(request, offline_bundle, checkpoint):
    """--uncertainty's model: the export's model_dropout.onnx, byte for byte, found as the export's is."""
    exported = build_bundle(bundle_cache(request.config), weights=checkpoint, size=SMALL_SIZE,
                            batch_size=SMALL_BATCH)
    ours, theirs = ((bundle / "model_dropout.onnx").read_bytes() for bundle in (offline_bundle, exported))
    assert len(ours) == len(theirs) and ours == theirs
    manifest, reference = load_manifest(offline_bundle), load_manifest(exported)
    assert manifest.files["model_dropout.onnx"] == reference.files["model_dropout.onnx"]
    for bundle in (manifest, reference):
        found = bundle.find("onnxruntime", "cpu", dropout=True)
        assert found is not None and found.id == "onnx-dropout" and found.path == "model_dropout.onnx"
        assert bundle.find("onnxruntime", "cpu").id == "onnx"
    ours_artifact, theirs_artifact = manifest.artifact("onnx-dropout"), reference.artifact("onnx-dropout")
    for key in ("function", "dropout", "opset", "exporter"):
        assert ours_artifact.details[key] == theirs_artifact.details[key]
    assert ours_artifact.details["dropout"]["mask_shape"] == [SMALL_BATCH, 512, SMALL_SIZE // 16, SMALL_SIZE // 16]
    assert (ours_artifact.files, ours_artifact.platforms) == (("model_dropout.onnx",), ("cpu", "cuda"))
    for backend, figures in ours_artifact.drift.items():  # ones and two drawn masks vs the float64 reference
        assert 0 < figures["max_abs"] < 1e-5 and figures["slices"] == 2 * 3 * SMALL_BATCH, backend


def test_tractseg_aot_runs_on_it_with_jax_and_torch_blocked(tmp_path, offline_bundle):
    peaks = save_peaks(tmp_path / "peaks.nii.gz", synthetic_peaks((12, 14, 11)))
    done = run_module("runtime.run", str(peaks), "-o", str(tmp_path / "out"), "--artifacts", str(offline_bundle),
                      "--backend", "onnxruntime", "--quiet", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list((tmp_path / "out" / "bundle_segmentations").glob("*.nii.gz"))) == 72


def test_uncertainty_runs_on_it_with_jax_and_torch_blocked(tmp_path, offline_bundle):
    peaks = save_peaks(tmp_path / "peaks.nii.gz", synthetic_peaks((12, 14, 11)))
    done = run_module("runtime.run", str(peaks), "-o", str(tmp_path / "out"), "--artifacts", str(offline_bundle),
                      "--backend", "onnxruntime", "--quiet", "--uncertainty", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    maps = sorted((tmp_path / "out" / "bundle_uncertainties").glob("*.nii.gz"))
    assert len(maps) == 72 and not (tmp_path / "out" / "bundle_segmentations").exists()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_reader_equals_torch_load(tmp_path, legacy):
    g = torch.Generator().manual_seed(0)
    tensors = {"f32": torch.randn(4, 3, generator=g)[:, 1:], "f64": torch.randn(5, generator=g).double(),
               "f16": torch.randn(2, 2, generator=g).half(), "bf16": torch.randn(3, generator=g).bfloat16(),
               "i64": torch.arange(4), "scalar": torch.tensor(2.5)}
    tensors["transposed"] = tensors["f32"].t()  # a view sharing a storage, other strides
    path = tmp_path / "w.npz"
    torch.save({"unet": tensors}, path, _use_new_zipfile_serialization=not legacy)
    ours = read_upstream_state_dict(path)
    for key, tensor in tensors.items():
        expected = tensor.float().numpy()
        assert ours[key].dtype == np.float32 and ours[key].shape == expected.shape
        np.testing.assert_array_equal(ours[key], expected)


class Hostile:
    """Unpickles to os.system(...) (pickled as posix.system)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def hostile_checkpoint(path: Path, marker: Path, legacy: bool, payload=None) -> Path:
    obj = {"unet": {"conv_5.bias": Hostile(marker) if payload is None else payload}}
    if legacy:
        stream = io.BytesIO()
        for part in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}, obj, []):
            pickle.dump(part, stream, protocol=2)
        path.write_bytes(stream.getvalue())
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", pickle.dumps(obj, protocol=2))
    return path


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_reader_refuses_to_call_anything_else(tmp_path, legacy):
    marker = tmp_path / "ran"
    path = hostile_checkpoint(tmp_path / "w.npz", marker, legacy)
    with pytest.raises(CheckpointError, match=r"refused global posix\.system") as info:
        read_checkpoint(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert not marker.exists()
    for payload in (print, collections.Counter, zipfile.ZipFile):
        with pytest.raises(CheckpointError, match="refused global"):
            read_checkpoint(hostile_checkpoint(tmp_path / "x.npz", marker, legacy, payload))


def test_reference_network_equals_the_live_jax_model():
    """The nearest-upsampling, linear family (TOM, dm_regression); the bilinear, sigmoid one is checked above: the
    bundle's drift against the reference stayed under 1e-5 on the ONNX the export verified against JAX."""
    import equinox as eqx
    import jax.numpy as jnp

    from export.model import slice_probabilities
    from export.weights import model_from_state_dict
    from runtime.weights.reference import Reference, check_batches

    state = random_state(3, 54)
    live = model_from_state_dict(state, upsample="nearest", linear=True)
    batch = check_batches(1, SMALL_SIZE)[0]
    ours = Reference(state, "nearest", linear=True)(batch)
    theirs = np.asarray(eqx.filter_jit(slice_probabilities)(live, jnp.asarray(batch)))
    assert ours.std() > 0.5 and np.abs(ours - theirs).max() < 5e-5  # raw outputs, |x| up to ~10


def test_reference_dropout_equals_the_live_jax_dropout_model():
    """pool_4 times the mask, as export/model.py's dropout_probabilities (bilinear, sigmoid: tract_segmentation)."""
    import equinox as eqx
    import jax.numpy as jnp

    from export.model import dropout_probabilities
    from runtime.network.dropout import bottleneck_shape
    from export.weights import model_from_state_dict
    from runtime.network.dropout import check_masks
    from runtime.weights.reference import Reference, check_batches

    state = random_state(3)
    live, batch = model_from_state_dict(state), check_batches(1, SMALL_SIZE)[1]
    reference = Reference(state)
    plain = reference(batch)
    ones, *drawn = check_masks(bottleneck_shape(1, SMALL_SIZE))
    np.testing.assert_array_equal(reference(batch, ones), plain)
    for mask in drawn:
        ours = reference(batch, mask)
        theirs = np.asarray(eqx.filter_jit(dropout_probabilities)(live, jnp.asarray(batch), jnp.asarray(mask)))
        assert np.abs(ours - plain).max() > 1e-3 and np.abs(ours - theirs).max() < 1e-5


def test_shipped_graphs_load_and_match_their_descriptions():
    graphs = [(model, dropout) for model in MODELS if not model.part
              for dropout in ((False, True) if model.dropout else (False,))]
    shipped = {graph_name(model, dropout) for model, dropout in graphs}
    assert {p.stem for p in GRAPHS_DIR.glob("*.onnx")} == {p.stem for p in GRAPHS_DIR.glob("*.json")} == shipped
    assert sum(dropout for _, dropout in graphs) == 2  # tract_segmentation, TractQuerier+ and xtract
    for model, dropout in graphs:
        graph = load_graph(model, dropout=dropout)  # size, sha256, slots and function checked
        assert graph.description["input"]["shape"] == [4, 9, 144, 144] and len(graph.slots) == 50
        assert graph.path.stat().st_size < 60_000
        assert ("dropout" in graph.description) == dropout
        if dropout:
            assert graph.description["dropout"]["mask_shape"] == [4, 512, 9, 9]
            assert [s["key"] for s in graph.slots] == [s["key"] for s in load_graph(model).slots]


@pytest.mark.fullsize
def test_shipped_graphs_are_what_the_exporter_makes_now():
    """Two S=144 exports (~15-25 s each): the shipped tract_segmentation graph and its dropout model's are the
    exporter's, byte for byte."""
    done = subprocess.run([sys.executable, "-m", "export.weight_free", "--models",
                           f"{MODEL.name},{graph_name(MODEL, dropout=True)}", "--seeds", "0",
                           "--check"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_damaged_graph_and_wrong_weights_are_one_line(tmp_path, small_graphs):
    graphs = shutil.copytree(small_graphs, tmp_path / "graphs")
    graph = load_graph(MODEL, graphs)
    state = random_state(1)
    del state["encode_1.0.weight"]
    with pytest.raises(WeightsError, match=r"missing: \['encode_1\.0\.weight'\]"):
        slot_data(graph, state, "w.npz")
    with pytest.raises(WeightsError, match="weights have 144 classes but tract_segmentation needs 72"):
        slot_data(graph, random_state(1, 144), "w.npz")
    onnx_file = graphs / f"{graph_name(MODEL)}.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:-1] + b"\0")
    with pytest.raises(ArtifactError, match="damaged graph file"):
        load_graph(MODEL, graphs)


def test_cli_refusals_are_one_line(tmp_path, capsys, checkpoint):
    (tmp_path / "bundle").mkdir()
    cases = [(["--offline", str(tmp_path)], f"{tmp_path / MODEL.local_name}: no such file"),
             (["--offline", str(checkpoint.parent), "--out", str(tmp_path / "bundle")], "exists (use --force"),
             (["--offline", str(tmp_path), "--task", "TOM"], "part models is not built")]
    for args, expect in cases:
        assert main(["--out", str(tmp_path / "b"), *args]) == 1
        check_one_error(capsys.readouterr().err, expect, prefix=PREFIX)
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.partial").exists()


def test_download_of_a_hostile_file_stops_at_the_reader(tmp_path, capsys, monkeypatch, small_graphs):
    payload = hostile_checkpoint(tmp_path / "served.npz", tmp_path / "ran", legacy=False).read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    monkeypatch.setenv("TRACTSEG_AOT_ZENODO_URL", f"http://127.0.0.1:{server.server_port}")
    try:
        code = main(["--weights-dir", str(tmp_path / "w"), "--out", str(tmp_path / "b"), "--graphs",
                     str(small_graphs), "--quiet"])
    finally:
        server.shutdown()
        server.server_close()
    assert code == 1
    check_one_error(capsys.readouterr().err, "refused global posix.system", prefix=PREFIX)
    downloaded = tmp_path / "w" / MODEL.local_name
    assert downloaded.read_bytes() == payload and (tmp_path / "w" / (MODEL.local_name + ".sha256")).is_file()
    assert not (tmp_path / "ran").exists() and files_under(tmp_path / "b") == []
