"""The runtime needs no JAX, jaxlib, Equinox, torch, export/ or tractseg: `python -m runtime.run` runs end to end
on every installed backend in a fresh interpreter whose sys.meta_path refuses those imports (tests/no_jax.py).

TensorFlow try-imports jax when it is installed beside it and carries on when that fails; the block makes the
failure real, so a pass here means the run did not need it.
"""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from runtime.network.backends import installed_backends
from runtime.run import main
from tests.no_jax import BLOCKED, run_module, run_python
from tests.run_support import build_bundle, bundle_cache, save_peaks, synthetic_peaks


@pytest.fixture(scope="session")
def all_formats(request) -> Path:
    """S=16 bundle with an artifact for every backend: ONNX (onnxruntime, openvino), SavedModel, IREE vmfb.
    The same build as test_export.py's (same options, so the cached bundle is shared)."""
    return build_bundle(bundle_cache(request.config), "tract_segmentation", ("stablehlo", "iree", "savedmodel", "onnx"),
                        size=16, batch_size=2, seed=0)


@pytest.mark.parametrize("module", ["jax", "jaxlib", "equinox", "torch"])
def test_the_block_is_real(module):
    assert module in BLOCKED
    done = run_python(f"import {module}\n")
    assert done.returncode != 0 and f"import of {module} is blocked" in done.stderr


def test_importing_the_runtime_loads_no_framework():
    done = run_python("import runtime.run, runtime.network.backends, runtime.network.predict, runtime.outputs.writers\n"
                      "print(sorted({m.split('.')[0] for m in sys.modules} & {'jax', 'torch', 'tensorflow', "
                      "'onnxruntime', 'openvino', 'iree'}))\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"  # a backend is imported only when it is chosen


def reference_probabilities(bundle: Path, peaks: Path, out: Path) -> np.ndarray:
    """onnxruntime, in this process, same input: what every backend must reproduce."""
    assert main([str(peaks), "-o", str(out), "--artifacts", str(bundle), "--backend", "onnxruntime", "--quiet",
                 "--get_probabilities", "--single_output_file"]) == 0
    return np.asarray(nib.load(out / "bundle_segmentations.nii.gz").dataobj)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "iree", "tensorflow"])
def test_cli_end_to_end_with_jax_and_torch_blocked(tmp_path, all_formats, backend):
    if backend not in installed_backends():
        pytest.skip(f"{backend} is not installed")
    peaks = save_peaks(tmp_path / "peaks.nii.gz", synthetic_peaks())
    report = tmp_path / "report.json"
    done = run_module("runtime.run", str(peaks), "-o", str(tmp_path / "out"), "--artifacts", str(all_formats),
                      "--backend", backend, "--device", "cpu", "--get_probabilities", "--single_output_file",
                      "--quiet", "--report", str(report), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(report.read_text())
    assert (record["backend"]["name"], record["backend"]["device"]) == (backend, "cpu")
    probs = np.asarray(nib.load(tmp_path / "out" / "bundle_segmentations.nii.gz").dataobj)
    assert probs.shape == (*synthetic_peaks().shape[:3], 72) and probs.dtype == np.float32
    assert probs.std() > 0.05  # really computed, not constant
    # every artifact was verified against the live model to 1e-5 at export; backends agree to that order
    reference = reference_probabilities(all_formats, peaks, tmp_path / "reference")
    assert np.abs(probs - reference).max() < 2e-5
