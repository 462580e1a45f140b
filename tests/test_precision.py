"""--precisions at export (int8, fp16 made from the ONNX, each measured against fp32 and Dice-gated), --precision
at run time (never a silent fallback), and the host self-check (a tampered reference or a wrong model fails
before anything is written). S=16 bundles: the export's full-subject Dice runs on a tiny subject."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from runtime.errors import ArtifactError, BackendError
from runtime.models.manifest import Artifact, host_cpu_flags, load_manifest
from runtime.network.precision import BF16_CPU_FLAGS
from tests.run_support import (SMALL_BATCH, SMALL_SIZE, build_bundle, bundle_cache, copy_bundle, files_under,
                               refused, resign)


@pytest.fixture(scope="session")
def precision_bundle(request) -> Path:
    """S=16 ONNX bundle with int8 and fp16 artifacts; --min-dice 0 so both ship whatever their Dice (the gate is
    tested on its own below)."""
    return build_bundle(bundle_cache(request.config), size=SMALL_SIZE, batch_size=SMALL_BATCH, formats=("onnx",),
                        precisions=("int8", "fp16"), min_dice=0.0)


def run_cli(*args) -> tuple[int, str]:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "runtime.run", *map(str, args)], capture_output=True, text=True)
    return done.returncode, done.stderr


def test_manifest_records_drift_and_dice_for_each_precision(precision_bundle):
    manifest = load_manifest(precision_bundle)
    assert manifest.precisions == ("fp32", "int8", "fp16")
    int8, fp16 = manifest.artifact("onnx-int8"), manifest.artifact("onnx-fp16")
    assert (int8.precision, int8.platforms, fp16.precision, fp16.platforms) == ("int8", ("cpu",), "fp16", ("cuda",))
    for artifact in (int8, fp16):
        assert artifact.drift and set(artifact.drift) == set(artifact.backends)
        for figures in artifact.drift.values():
            dice = figures["dice"]
            assert 0.0 <= dice["dice_min"] <= dice["dice_mean"] <= 1.0 and dice["worst_bundle"] in manifest.bundles
            assert figures["max_abs"] > 0
    # fp16 keeps ~3 decimal digits: measured max abs 1.3e-3 (S=16) and 2.3e-3 (S=144) against fp32
    assert fp16.drift["onnxruntime"]["max_abs"] < 1e-2 and fp16.drift["onnxruntime"]["dice"]["dice_mean"] > 0.95
    assert "calibration" in int8.details and manifest.self_check is not None
    assert "selfcheck.npz" in manifest.files


def test_int8_runs_with_its_precision_in_the_report(precision_bundle, good, tmp_path):
    code, err = run_cli(good, "-o", tmp_path / "o", "--artifacts", precision_bundle, "--precision", "int8",
                        "--backend", "onnxruntime", "--quiet", "--report", tmp_path / "r.json")
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["precision"] == "int8" and report["artifact"]["artifact_id"] == "onnx-int8"
    check = report["self_check"]
    assert check["max_abs"] <= check["limit"] and check["recorded_max_abs"] > 1e-4  # int8 really is int8
    assert len(files_under(tmp_path / "o")) == 72


def test_missing_precision_is_one_line_and_writes_nothing(capsys, tract_small, good, tmp_path):
    refused(capsys, tmp_path, good, "-o", tmp_path / "out", "--artifacts", tract_small, "--precision", "int8",
            expect="has no int8 artifact")


def test_fp16_on_a_cpu_is_refused(capsys, precision_bundle, good, tmp_path):
    refused(capsys, tmp_path, good, "-o", tmp_path / "out", "--artifacts", precision_bundle, "--precision", "fp16",
            expect="fp16 is for CUDA GPUs")


def test_bf16_is_refused_on_a_host_without_bf16(precision_bundle, tmp_path, monkeypatch):
    """A bundle with a bf16 artifact (the ONNX file with OpenVINO's bf16 hint) on a simulated host without
    AVX512_BF16/AMX: one line, never fp32 in its place; with the flags simulated, the bf16 artifact is chosen."""
    from runtime.network import precision
    from runtime.pipeline import TractSegPipeline

    bundle = tmp_path / "b"
    shutil.copytree(precision_bundle, bundle)
    raw = json.loads((bundle / "manifest.json").read_text())
    fp32 = next(a for a in raw["artifacts"] if a["id"] == "onnx")
    raw["artifacts"].append({**fp32, "id": "onnx-bf16", "backends": ["openvino"], "platforms": ["cpu"],
                             "precision": "bf16", "details": {"inference_precision": "bf16"},
                             "drift": {"openvino": {"max_abs": 0.05}}})
    (bundle / "manifest.json").write_text(json.dumps(raw))
    monkeypatch.setattr(precision, "host_cpu_flags", lambda: frozenset({"avx2", "fma"}))
    with pytest.raises(BackendError, match="AVX512_BF16 or AMX") as refusal:
        TractSegPipeline.open(bundle, precision="bf16")
    assert "\n" not in str(refusal.value)
    monkeypatch.setattr(precision, "host_cpu_flags", lambda: frozenset({"avx512_bf16"}))
    pipe = TractSegPipeline.open(bundle, precision="bf16", self_check=False)
    assert pipe.artifact.id == "onnx-bf16" and pipe.backend.name == "openvino"


@pytest.mark.skipif(bool(host_cpu_flags() & BF16_CPU_FLAGS), reason="this host computes bf16 natively")
def test_export_refuses_bf16_it_cannot_measure(tmp_path):
    from export.__main__ import main

    assert main(["--random-weights", "0", "--slice-size", "16", "--formats", "onnx", "--precisions", "bf16",
                 "--out", str(tmp_path / "b")]) == 1
    assert not (tmp_path / "b").exists()


def test_tampered_reference_fails_the_self_check(capsys, tract_small, good, tmp_path):
    bundle = copy_bundle(tract_small, tmp_path / "b", link_artifact=True)
    with np.load(bundle / "selfcheck.npz") as stored:
        arrays = dict(stored)
    arrays["reference"] = arrays["reference"].copy()
    arrays["reference"][0, 0] += 0.3
    np.savez_compressed(bundle / "selfcheck.npz", **arrays)
    resign(bundle, "selfcheck.npz")
    line = refused(capsys, tmp_path, good, "-o", tmp_path / "out", "--artifacts", bundle, "--backend",
                   "onnxruntime", expect="self-check failed")
    assert "drifts 0.3" in line
    from runtime.run import main  # the check is what refused it: skipped, the same run succeeds

    assert main([str(good), "-o", str(tmp_path / "out"), "--artifacts", str(bundle), "--quiet",
                 "--no-self-check"]) == 0


def test_wrong_model_behind_a_valid_manifest_fails_the_self_check(capsys, precision_bundle, good, tmp_path):
    """model.onnx replaced by the int8 model (a different network) and the manifest re-signed: checksums pass,
    the self-check does not, on both CPU backends."""
    bundle = tmp_path / "b"
    bundle.mkdir()
    for name in ("manifest.json", "selfcheck.npz", "model.int8.onnx", "model.fp16.onnx"):
        shutil.copy(precision_bundle / name, bundle)
    (bundle / "model_dropout.onnx").symlink_to(precision_bundle / "model_dropout.onnx")  # untouched here
    shutil.copy(precision_bundle / "model.int8.onnx", bundle / "model.onnx")
    resign(bundle, "model.onnx")
    for backend in ("onnxruntime", "openvino"):
        refused(capsys, tmp_path, good, "-o", tmp_path / "out", "--artifacts", bundle, "--backend", backend,
                expect="self-check failed")


def test_export_dice_gate_refuses_a_bad_quantization(tmp_path, monkeypatch):
    """A deliberately broken "int8" (the fp32 ONNX with its first convolution's weights negated): the export
    fails with one line naming the precision and the worst bundle, and leaves nothing behind."""
    from export import precisions
    from export.bundle import ExportRequest, build_bundle
    from export.weights import model_from_state_dict, random_state_dict
    from runtime.models.bundles import model_for
    from runtime.models.manifest import WeightsInfo

    def broken(work: Path, calibration: dict):
        model = onnx.load(str(work / "model.onnx"))
        first = next(n for n in model.graph.node if n.op_type == "Conv").input[1]
        for init in model.graph.initializer:
            if init.name == first:
                init.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(init), init.name))
        onnx.save(model, str(work / precisions.INT8_FILE))
        return Artifact("onnx-int8", "onnx", precisions.INT8_FILE, ("cpu",), ("onnxruntime",),
                        (precisions.INT8_FILE,), precision="int8")

    monkeypatch.setitem(precisions.MAKERS, "int8", broken)
    model = model_for("tract_segmentation", "TractQuerier+")
    info = WeightsInfo(source="random (seed 0, He-scaled)", sha256=None, demo=True, seed=0)
    out = tmp_path / "bundle"
    request = ExportRequest(model=model, out=out, formats=("onnx",), platforms=("cpu",), batch_size=SMALL_BATCH,
                            slice_size=SMALL_SIZE, precisions=("fp32", "int8"))
    with pytest.raises(precisions.PrecisionError) as failure:
        build_bundle(model_from_state_dict(random_state_dict(0, 72)), request, info, log=lambda _: None)
    message = str(failure.value)
    assert message.startswith("int8: min bundle Dice vs fp32") and "below --min-dice 0.97" in message
    assert any(f"({name})" in message for name in model.bundles) and "\n" not in message
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()


def test_manifest_schema_rejects_an_unknown_precision(tract_small, tmp_path):
    bundle = copy_bundle(tract_small, tmp_path / "b", link_artifact=True)
    raw = json.loads((bundle / "manifest.json").read_text())
    raw["artifacts"][0]["precision"] = "fp8"
    (bundle / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match=r"artifacts\[0\].precision is 'fp8'"):
        load_manifest(bundle)


def test_self_check_figures_on_the_exact_path(tract_small):
    """fp32 on the export host: the check batch reproduces the recorded reference within the recorded drift."""
    from runtime.pipeline import TractSegPipeline

    pipe = TractSegPipeline.open(tract_small, backend="onnxruntime", device="cpu")
    check = pipe.self_check
    assert check["max_abs"] <= check["recorded_max_abs"] + 1e-7 < 1e-5 and check["seconds"] < 5
    assert pipe.artifact.precision == "fp32"
