"""Export: a small bundle in every format, its manifest and checksums, artifacts equal to the live model."""
from __future__ import annotations

import json
import shutil

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest

from export.__main__ import main as export_main
from export.bundle import ExportRequest, build_bundle
from export.model import slice_probabilities
from export.sample_inputs import synthetic_slices
from export.verify import DriftError
from export.weights import model_from_state_dict, random_state_dict
from runtime.network.backends import installed_backends, open_backend
from runtime.models.bundles import model_for
from runtime.io.checksum import sha256_of
from runtime.models.manifest import ArtifactError, WeightsInfo, load_manifest
from tests.run_support import build_bundle as cached_bundle
from tests.run_support import bundle_cache

SIZE, BATCH, SEED = 16, 2, 0
TOL = 1e-5  # the export's own acceptance bound: max abs probability vs the live model on CPU
ALL_FORMATS = ("stablehlo", "iree", "savedmodel", "onnx")


@pytest.fixture(scope="module")
def small_bundle(request):
    return cached_bundle(bundle_cache(request.config), formats=ALL_FORMATS, size=SIZE, seed=SEED,
                         batch_size=BATCH)


def test_manifest_schema_and_checksums(small_bundle):
    manifest = load_manifest(small_bundle)
    raw = json.loads((small_bundle / "manifest.json").read_text())  # the on-disk contract itself
    assert load_manifest(small_bundle).to_dict() == raw, "typed manifest round-trips the file"
    model = model_for("tract_segmentation")
    assert manifest.task == "tract_segmentation" and manifest.n_classes == 72
    assert manifest.bundles == model.bundles
    assert raw["function"]["input"] == {"name": "slices", "shape": [BATCH, 9, SIZE, SIZE], "dtype": "float32",
                                        "layout": raw["function"]["input"]["layout"]}
    assert raw["function"]["output"]["shape"] == [BATCH, 72, SIZE, SIZE]
    assert raw["function"]["contains"]["sigmoid"] is True
    assert raw["weights"]["demo"] is True
    for package in ("jax", "jaxlib", "equinox", "jax2onnx", "onnx", "iree-base-compiler"):
        assert package in raw["versions"]
    assert {a.id for a in manifest.artifacts} == {"jax-export", "stablehlo", "iree-cpu-avx512", "iree-cpu",
                                                 "savedmodel", "onnx", "onnx-dropout"}
    listed = set()
    for artifact in manifest.artifacts:
        manifest.verify_files(artifact)
        listed |= set(artifact.files)
        for rel in artifact.files:
            assert raw["files"][rel]["sha256"] == sha256_of(small_bundle / rel)
    assert manifest.self_check is not None
    manifest.verify_file(manifest.self_check.path)
    listed.add(manifest.self_check.path)
    on_disk = {str(p.relative_to(small_bundle)) for p in small_bundle.rglob("*") if p.is_file()}
    assert on_disk - {"manifest.json"} == listed == set(raw["files"]), "every shipped file is checksummed"


def test_recorded_drift_within_tolerance(small_bundle):
    manifest = load_manifest(small_bundle)
    runnable = [a for a in manifest.artifacts if a.backends and "not_run" not in a.drift]
    assert {a.id for a in runnable} >= {"onnx", "savedmodel", "iree-cpu"}  # iree-cpu-avx512 runs where AVX-512 is
    for artifact in runnable:
        for backend in artifact.backends:
            figures = artifact.drift[backend]
            assert figures["max_abs"] <= TOL and figures["slices"] == 2 * BATCH, (artifact.id, backend)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "iree", "tensorflow"])
def test_artifact_equals_live_model_on_new_input(small_bundle, backend):
    if backend not in installed_backends():
        pytest.skip(f"{backend} not installed")
    manifest = load_manifest(small_bundle)
    run = open_backend(backend, "cpu", manifest)
    assert run.device == "cpu"
    live = model_from_state_dict(random_state_dict(SEED, 72))
    batch = synthetic_slices(BATCH, SIZE, seed=99)
    expected = np.asarray(eqx.filter_jit(slice_probabilities)(live, jnp.asarray(batch)))
    got = run(batch)
    assert expected.std() > 0.05
    assert np.abs(got - expected).max() <= TOL


@pytest.fixture
def onnx_only_copy(small_bundle, tmp_path):
    """The bundle's ONNX file with its manifest pruned to that artifact (a manifest must list only files that
    are there)."""
    manifest = json.loads((small_bundle / "manifest.json").read_text())
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["id"] == "onnx"]
    manifest["files"] = {rel: manifest["files"][rel] for rel in ("model.onnx", "selfcheck.npz")}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    shutil.copy(small_bundle / "model.onnx", tmp_path)
    shutil.copy(small_bundle / "selfcheck.npz", tmp_path)
    return tmp_path


def test_tampered_artifact_refused_at_load(onnx_only_copy):
    path = onnx_only_copy / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="tampered") as e:
        open_backend("onnxruntime", "cpu", load_manifest(onnx_only_copy))
    assert "model.onnx" in str(e.value) and "\n" not in str(e.value)


def test_truncated_or_missing_artifact_refused(onnx_only_copy):
    path = onnx_only_copy / "model.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ArtifactError, match="size"):
        open_backend("onnxruntime", "cpu", load_manifest(onnx_only_copy))
    path.unlink()
    with pytest.raises(ArtifactError, match="missing"):
        open_backend("onnxruntime", "cpu", load_manifest(onnx_only_copy))


def test_tampered_manifest_refused(onnx_only_copy):
    manifest = json.loads((onnx_only_copy / "manifest.json").read_text())
    manifest["files"]["model.onnx"]["sha256"] = "0" * 64
    (onnx_only_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="tampered"):
        open_backend("onnxruntime", "cpu", load_manifest(onnx_only_copy))


def test_drift_over_tolerance_fails_the_export(tmp_path):
    network = model_from_state_dict(random_state_dict(SEED, 72))
    out = tmp_path / "bundle"
    request = ExportRequest(model=model_for("tract_segmentation"), out=out, formats=("onnx",),
                            platforms=("cpu",), batch_size=BATCH, slice_size=SIZE, tolerance=1e-12)
    with pytest.raises(DriftError, match="artifact onnx on onnxruntime"):
        build_bundle(network, request, WeightsInfo(source="test", sha256=None, demo=True), log=lambda _: None)
    assert not out.exists() and not (tmp_path / "bundle.partial").exists()


def test_export_refuses_weights_of_another_model(tmp_path, capsys):
    from safetensors.numpy import save_file

    weights = tmp_path / "xtract.safetensors"
    save_file(random_state_dict(0, 42), str(weights))
    code = export_main(["--task", "tract_segmentation", "--weights", str(weights), "--out", str(tmp_path / "b"),
                        "--slice-size", "16", "--formats", "onnx"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "42 classes" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "b").exists()
