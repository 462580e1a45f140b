"""The full-size (S=144) tract_segmentation bundle, every format, cpu and cuda variants, from seeded random
weights; every CPU artifact runs in a process where importing jax/torch is blocked and equals the live model.

Tolerance 1e-5 max abs probability: the export's own acceptance bound (float32 convolutions summed in a
different order; measured 3e-6 to 6e-6 here).
"""
from __future__ import annotations

import json

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest

from export.model import slice_probabilities
from export.sample_inputs import check_batches
from export.weights import model_from_state_dict, random_state_dict
from runtime.network.backends import installed_backends
from runtime.models.manifest import load_manifest
from tests.no_jax import run_python

pytestmark = pytest.mark.fullsize
TOL = 1e-5
SEED = 0

RUN_ALL_BACKENDS = """
import json, sys
import numpy as np
from runtime.network.backends import open_backend
from runtime.models.manifest import load_manifest
from runtime.network.precision import self_check
manifest = load_manifest(sys.argv[1])
inputs = np.load(sys.argv[2], allow_pickle=False)
results = {}
for backend in sys.argv[4].split(","):
    run = open_backend(backend, "cpu", manifest)
    outputs = [run(inputs[k]) for k in sorted(inputs.files)]
    np.savez(f"{sys.argv[3]}/{backend}.npz", *outputs)
    results[backend] = {"device": run.device, "detail": run.detail, "jax_loaded": "jax" in sys.modules,
                        "self_check": self_check(run, manifest, manifest.find(backend, "cpu"), backend, "cpu")}
print(json.dumps(results))
"""


def test_bundle_has_every_format_for_cpu_and_cuda(full_bundle):
    manifest = load_manifest(full_bundle)
    ids = {a.id for a in manifest.artifacts}
    assert {"jax-export", "stablehlo", "iree-cpu-avx512", "iree-cpu", "iree-cuda", "savedmodel", "onnx"} <= ids
    assert manifest.artifact("iree-cuda").platforms == ("cuda",)
    assert "not_run" in manifest.artifact("iree-cuda").drift
    assert set(manifest.artifact("jax-export").platforms) == {"cpu", "cuda"}
    assert set(manifest.artifact("savedmodel").platforms) == {"cpu", "cuda"}
    for artifact in manifest.artifacts:
        manifest.verify_files(artifact)


def test_dropout_model_at_full_size_equals_the_live_model_with_drawn_masks(full_bundle):
    """--uncertainty's dropout model at S=144: the export's drift with a mask of ones and two drawn masks (each
    check batch) against the live model, within the gate, on every ONNX backend that ran it."""
    manifest = load_manifest(full_bundle)
    artifact = manifest.find("onnxruntime", "cpu", dropout=True)
    assert artifact is not None and artifact.details["dropout"]["mask_shape"] == [4, 512, 9, 9]
    assert artifact.drift and all(d["max_abs"] <= TOL for d in artifact.drift.values())
    print(f"\n[dropout] S=144 drift: {({k: d['max_abs'] for k, d in artifact.drift.items()})}")


def test_every_artifact_runs_without_jax_and_equals_live_model(full_bundle, tmp_path):
    batches = check_batches(4, 144, seed=7)
    np.savez(tmp_path / "inputs.npz", *batches)
    backends = installed_backends()
    done = run_python(RUN_ALL_BACKENDS, str(full_bundle), str(tmp_path / "inputs.npz"), str(tmp_path),
                      ",".join(backends))
    assert done.returncode == 0, done.stderr[-3000:]
    ran = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(ran) == set(backends) and not any(r["jax_loaded"] for r in ran.values())
    for backend, result in ran.items():  # the host self-check passes on every backend at full size
        check = result["self_check"]
        assert check["max_abs"] <= check["limit"] and check["max_abs"] < TOL, (backend, check)
    live = model_from_state_dict(random_state_dict(SEED, 72))
    probabilities = eqx.filter_jit(slice_probabilities)
    expected = [np.asarray(probabilities(live, jnp.asarray(b))) for b in batches]
    assert all(e.std() > 0.05 for e in expected)
    for backend in backends:
        got = np.load(tmp_path / f"{backend}.npz")
        diff = max(float(np.abs(got[f"arr_{i}"] - e).max()) for i, e in enumerate(expected))
        assert diff <= TOL, f"{backend}: max abs difference {diff:.2e}"


def test_fp16_onnx_stays_close_to_the_live_model(full_bundle, tmp_path):
    """The fp16 ONNX (export/precisions.py) of the full-size bundle, run on ONNX Runtime's CPU: within 1e-2 of the
    live fp32 model (measured 2.3e-3 on the example slices; fp16 keeps ~3 significant digits)."""
    from export.precisions import fp16_artifact
    from runtime.network.backends import load_artifact

    (tmp_path / "model.onnx").symlink_to(full_bundle / "model.onnx")
    artifact = fp16_artifact(tmp_path, {})
    run = load_artifact("onnxruntime", tmp_path / artifact.path, artifact, "cpu")
    batch = check_batches(4, 144, seed=7)[0]
    live = model_from_state_dict(random_state_dict(SEED, 72))
    expected = np.asarray(eqx.filter_jit(slice_probabilities)(live, jnp.asarray(batch)))
    diff = float(np.abs(run(batch) - expected).max())
    assert 1e-5 < diff < 1e-2, diff
