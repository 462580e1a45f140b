"""The Python API (runtime.TractSegPipeline / Segmentation) against the CLI's files, on real bundles; --device auto
on a simulated CUDA host."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

import runtime.network.backends as backends
from runtime import TractSegPipeline
from runtime.errors import BackendError, InputError
from runtime.models.manifest import load_manifest
from runtime.run import main
from tests.run_support import LAS, REPO, files_under, save_peaks, synthetic_peaks


def mask_files(out) -> dict[str, np.ndarray]:
    """Bundle name -> array of each file in ``out/bundle_segmentations``."""
    folder = out / "bundle_segmentations"
    return {p.name[:-len(".nii.gz")]: np.asarray(nib.load(p).dataobj) for p in folder.iterdir()}


def cli_outputs(bundle, peaks, out, *extra) -> dict[str, np.ndarray]:
    assert main([str(peaks), "-o", str(out), "--artifacts", str(bundle), "--quiet", *extra]) == 0
    return mask_files(out)


@pytest.fixture(scope="module")
def pipeline(request):
    from tests.run_support import small_bundle

    return TractSegPipeline.open(small_bundle(request.config), backend="onnxruntime", device="cpu")


def test_api_equals_cli_probabilities_and_masks(pipeline, tmp_path):
    peaks = save_peaks(tmp_path / "peaks.nii.gz", synthetic_peaks((22, 26, 19)))
    bundle = pipeline.manifest.root
    seg = pipeline.predict(peaks)
    probabilities = seg.probabilities
    assert probabilities.shape == (72, 22, 26, 19) and probabilities.dtype == np.float32
    assert probabilities.std() > 0.05
    files = cli_outputs(bundle, peaks, tmp_path / "p", "--get_probabilities", "--backend", "onnxruntime")
    assert np.array_equal(probabilities, np.stack([files[b] for b in seg.bundles]))
    masks = seg.masks()
    files = cli_outputs(bundle, peaks, tmp_path / "m", "--backend", "onnxruntime")
    assert masks.dtype == np.uint8 and np.array_equal(masks, np.stack([files[b] for b in seg.bundles]))
    assert masks.sum() > 0
    raw = cli_outputs(bundle, peaks, tmp_path / "n", "--no_postprocess", "--backend", "onnxruntime")
    assert np.array_equal(seg.mask("CST_left", postprocess=False), raw["CST_left"])
    assert np.array_equal(seg.probability("CA"), probabilities[seg.bundles.index("CA")])


def test_api_inputs_path_image_and_array_agree_and_save(pipeline, tmp_path):
    data = synthetic_peaks((20, 24, 18), seed=3)
    peaks = save_peaks(tmp_path / "peaks.nii.gz", data)
    from_path = pipeline.predict(peaks)
    from_image = pipeline.predict(nib.load(peaks))
    copy = data.copy()
    from_array = pipeline.predict((copy, LAS))
    assert np.array_equal(copy, data), "the caller's array is not changed"
    for other in (from_image, from_array):
        assert np.array_equal(from_path.fused, other.fused) and np.array_equal(other.affine, LAS)
    written = from_array.save(tmp_path / "out")
    assert len(written) == 72 and all(p.is_file() for p in written)
    files = cli_outputs(pipeline.manifest.root, peaks, tmp_path / "cli", "--backend", "onnxruntime")
    for path in written:
        assert np.array_equal(np.asarray(nib.load(path).dataobj), files[path.name[:-len(".nii.gz")]])
    with pytest.raises(Exception, match="already exist"):
        from_array.save(tmp_path / "out")
    assert len(from_array.save(tmp_path / "out", single_file=True, probabilities=True)) == 1


def test_api_refuses_bad_arrays_with_one_line(pipeline):
    with pytest.raises(InputError, match="expected a 4D peak image"):
        pipeline.predict((np.zeros((4, 4, 4, 3), np.float32), LAS))
    with pytest.raises(InputError, match="complex"):
        pipeline.predict((np.ones((8, 8, 8, 9), np.complex64), LAS))
    with pytest.raises(InputError, match="singular"):
        pipeline.predict((np.ones((8, 8, 8, 9), np.float32), np.zeros((4, 4))))


@pytest.fixture()
def cuda_capable_manifest(tract_small, tmp_path):
    """The small bundle, its ONNX artifact also declared for cuda (as a GPU export would)."""
    bundle = tmp_path / "bundle"
    shutil.copytree(tract_small, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    for artifact in manifest["artifacts"]:
        artifact["platforms"] = ["cpu", "cuda"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return load_manifest(bundle)


def test_device_auto_takes_cuda_only_where_the_backend_can(cuda_capable_manifest, monkeypatch):
    """A simulated host where libcuda loads (a GPU driver) but the installed onnxruntime is the CPU wheel and
    OpenVINO has no CUDA: auto must pick the CPU, and an explicit --device cuda stays a one-line error."""
    import onnxruntime

    assert "CUDAExecutionProvider" not in onnxruntime.get_available_providers()
    monkeypatch.setattr(backends, "cuda_available", lambda: True)
    name, device = backends.choose("auto", "auto", cuda_capable_manifest)
    assert device == "cpu" and name in ("openvino", "onnxruntime")
    assert backends.choose("onnxruntime", "auto", cuda_capable_manifest) == ("onnxruntime", "cpu")
    with pytest.raises(BackendError, match="CUDAExecutionProvider"):
        backends.open_backend("onnxruntime", "cuda", cuda_capable_manifest)
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert backends.choose("onnxruntime", "auto", cuda_capable_manifest) == ("onnxruntime", "cuda")


@pytest.mark.fullsize
def test_api_and_cohort_parity_on_the_full_size_bundle(full_bundle, tmp_path):
    """S=144 bundle: the API's probabilities equal runtime.run --get_probabilities's file (transposed to channel
    first) and its masks equal runtime.run's, and so do runtime.cohort's (one Dask worker process). The input's
    nonzero voxels fill a small corner block plus one voxel at the far corner, so most of the 432 slices are empty
    (computed once): the same code path, a fraction of the network time."""
    bundle = full_bundle
    data = np.zeros((48, 56, 44, 9), np.float32)
    data[:8, :8, :8] = synthetic_peaks((8, 8, 8), seed=5)
    data[-1, -1, -1] = 0.5
    peaks = save_peaks(tmp_path / "peaks.nii.gz", data)
    pipe = TractSegPipeline.open(bundle, backend="onnxruntime", device="cpu")
    seg = pipe.predict(peaks)
    assert seg.slices.skipped > 300
    assert main([str(peaks), "-o", str(tmp_path / "p"), "--artifacts", str(bundle), "--quiet", "--backend",
                 "onnxruntime", "--get_probabilities", "--single_output_file"]) == 0
    probs = np.asarray(nib.load(tmp_path / "p" / "bundle_segmentations.nii.gz").dataobj)
    assert np.array_equal(seg.probabilities, np.moveaxis(probs, 3, 0)) and probs[:8, :8, :8].std() > 0.01
    files = cli_outputs(bundle, peaks, tmp_path / "m", "--backend", "onnxruntime")
    masks = seg.masks()
    assert np.array_equal(masks, np.stack([files[b] for b in seg.bundles])) and masks.sum() > 0
    assert files_under(tmp_path / "m")
    pytest.importorskip("distributed", reason="the [cohort] extra (Dask) is not installed")
    study = tmp_path / "study" / "sub-01" / "dwi"
    study.mkdir(parents=True)
    shutil.copyfile(peaks, study / "sub-01_peaks.nii.gz")
    done = subprocess.run([sys.executable, "-m", "runtime.cohort", str(tmp_path / "study"), "-o", str(tmp_path / "c"),
                           "--artifacts", str(bundle), "--backend", "onnxruntime", "--workers", "1", "--quiet"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    cohort_masks = mask_files(tmp_path / "c" / "sub-01")
    assert set(cohort_masks) == set(seg.bundles)
    assert all(np.array_equal(cohort_masks[b], files[b]) for b in seg.bundles)
