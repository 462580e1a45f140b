"""Winograd F(2x2,3x3) and F(4x4,3x3) (export/winograd.py, issue 20): the forward of every 3x3 layer shape of the
U-Net against a float64 direct convolution, and a winograd2 bundle from the real export CLI run by the JAX-free
runtime next to the direct bundle."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import equinox as eqx
import jax.numpy as jnp
import nibabel as nib
import numpy as np
import pytest

from benchmarks.bundle import EXPORT_INPUTS
from export.conv_plan import level
from export.model import Conv, layer_table
from export.winograd import WinogradConv
from runtime.models.manifest import load_manifest
from tests.run_support import REPO, SMALL_BATCH, SMALL_SIZE, bundle_cache, save_peaks, synthetic_peaks

EPS = float(np.finfo(np.float32).eps)
# Bound on max |y - y_float64| in units of eps32 * max(sum |w| |x|) (the conv of the absolute values: the scale
# rounding errors are proportional to). A float32 sum of n products errs by at most ~n eps sum|terms| and in
# practice ~1 eps sum|terms|: XLA's direct conv measured 0.6-1.9 on these shapes, F(2x2,3x3) 0.36-0.74 (its
# B, G, A hold only 0, +-1/2, +-1: exact in float32, at most 4 terms per transform sum). F(4x4,3x3)'s points +-2
# put 4, 5 and 8 into B and A and 1/6, 1/24 into G (inexact), which amplifies the rounding: measured 4.2-14.7.
# The bounds leave ~2x headroom over the worst measured; a wrong transform or tile offset errs by O(1e7) units.
BOUND = {2: 4.0, 4: 32.0}
SCALE_DOWN = 8  # n_filt 64 -> 8: every layer's channel ratio kept, the test stays fast


def direct_float64(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3x3, stride 1, padding 1 cross-correlation in float64, and the same of |x| with |w| (the error scale)."""
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    h, wd = x.shape[2:]
    xp = np.pad(x64, ((0, 0), (0, 0), (1, 1), (1, 1)))
    taps = [(i, j) for i in range(3) for j in range(3)]
    y = sum(np.einsum("oc,bchw->bohw", w64[:, :, i, j], xp[:, :, i:i + h, j:j + wd]) for i, j in taps)
    scale = sum(np.einsum("oc,bchw->bohw", np.abs(w64[:, :, i, j]), np.abs(xp[:, :, i:i + h, j:j + wd]))
                for i, j in taps)
    return y + b.astype(np.float64)[None, :, None, None], scale


def layer_cases() -> list[tuple[str, int, int, int]]:
    """(layer, C_in, C_out, side) for every 3x3 layer of the U-Net, channels / 8, at slice size 48 (maps 48, 24,
    12, 6 and 3: the odd 3x3 at the bottom) and the bottom layers also at 9x9 (slice size 144) and 5x5, 1x1."""
    cases = []
    for name, kind, cin, cout in layer_table(72, n_filt=64 // SCALE_DOWN):
        if kind == "conv3":
            cases.append((name, cin, cout, 48 >> level(name)))
            if name.startswith("encode"):
                cases += [(name, cin, cout, side) for side in (9, 5, 1)]
    return cases


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("name,cin,cout,side", layer_cases())
def test_winograd_forward_equals_direct(name: str, cin: int, cout: int, side: int, m: int) -> None:
    rng = np.random.default_rng(zlib.crc32(f"{name}-{side}".encode()))
    x = rng.standard_normal((2, cin, side, side)).astype(np.float32)
    w = (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2 / (9 * cin))).astype(np.float32)  # He, like the net
    b = (0.1 * rng.standard_normal(cout)).astype(np.float32)
    want, scale = direct_float64(x, w, b)
    assert want.std() > 0.1, "degenerate reference"
    layer = WinogradConv.from_conv(Conv(jnp.asarray(w), jnp.asarray(b)), m)
    got = np.asarray(eqx.filter_jit(layer)(jnp.asarray(x)))
    assert got.shape == want.shape
    error = float(np.abs(got - want).max()) / (EPS * float(scale.max()))
    assert error <= BOUND[m], f"F({m}x{m},3x3) {name} {side}x{side}: error {error:.2f} eps units > {BOUND[m]}"


def exported_bundle(config: pytest.Config, *extra: str) -> Path:
    """The fast tests' bundle (S=16, batch 3, ONNX, seed 0: tests/run_support.small_bundle's) from the real export
    CLI with `extra` arguments, cached by the export sources like tests/run_support.build_bundle."""
    args = ["--random-weights", "0", "--slice-size", str(SMALL_SIZE), "--batch-size", str(SMALL_BATCH),
            "--formats", "onnx", "--platforms", "cpu", *extra]
    key = hashlib.sha256(" ".join(args).encode())
    for path in EXPORT_INPUTS:
        key.update(path.read_bytes())
    cache = bundle_cache(config)
    name = f"winograd-test-{'-'.join(a.strip('-') for a in extra)}"
    out = cache / f"{name}-{key.hexdigest()[:12]}"
    if not (out / "manifest.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        done = subprocess.run([sys.executable, "-m", "export", *args, "--out", str(out)], cwd=REPO,
                              capture_output=True, text=True)
        assert done.returncode == 0, f"export {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        for stale in cache.glob(f"{name}-*"):
            if stale != out:
                shutil.rmtree(stale, ignore_errors=True)
    return out


def probabilities(bundle: Path, peaks: Path, out: Path) -> tuple[np.ndarray, dict]:
    """The JAX-free runtime CLI's probabilities (one 4D image) and its report, on ONNX Runtime, self-check on."""
    report = out / "report.json"
    done = subprocess.run([sys.executable, "-m", "runtime.run", str(peaks), "-o", str(out), "--artifacts",
                           str(bundle), "--backend", "onnxruntime", "--get_probabilities", "--single_output_file",
                           "--quiet", "--report", str(report)], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    image = next(out.glob("*.nii.gz"))
    return np.asarray(nib.load(image).dataobj, dtype=np.float32), json.loads(report.read_text())


def test_winograd2_bundle_matches_direct_in_runtime(request, tract_small: str, tmp_path: Path) -> None:
    import onnx

    direct = Path(tract_small)  # the fast tests' direct bundle (same S, batch, format, seed), shared with them
    winograd = exported_bundle(request.config, "--conv-algorithm", "winograd2")
    plan = load_manifest(winograd).artifact("onnx").conv_algorithms
    conv3 = [name for name, kind, _, _ in layer_table(72) if kind == "conv3"]
    assert plan == {name: "winograd2" for name in conv3}
    assert set(load_manifest(direct).artifact("onnx").conv_algorithms.values()) == {"direct"}
    ops = [[n.op_type for n in onnx.load(str(b / "model.onnx")).graph.node] for b in (direct, winograd)]
    counts = [(o.count("MatMul"), o.count("ConvTranspose")) for o in ops]
    # winograd2: per 3x3 layer one GEMM (MatMul) and one output transform (ConvTranspose), beside the 4 deconvs
    assert counts == [(0, 4), (18, 4 + 18)], f"(MatMul, ConvTranspose) nodes, direct and winograd2: {counts}"

    peaks = save_peaks(tmp_path / "in" / "peaks.nii.gz", synthetic_peaks((22, 26, 19)))
    want, _ = probabilities(direct, peaks, tmp_path / "direct")
    got, report = probabilities(winograd, peaks, tmp_path / "winograd")
    assert report["self_check"]["max_abs"] <= report["self_check"]["limit"]
    assert want.std() > 0.05, "degenerate probabilities"
    # each bundle is within the 1e-5 export gate of the same live direct model: within 2e-5 of each other
    assert float(np.abs(got - want).max()) <= 2e-5


def test_manifest_conv_algorithms_field(tract_small: str, tmp_path: Path) -> None:
    """Bundles exported before the field existed still load (every layer direct); a bad value is one line."""
    from runtime.errors import ArtifactError
    from tests.run_support import copy_bundle, edit_manifest

    bundle = copy_bundle(tract_small, tmp_path / "old", link_artifact=True)

    def drop(document):
        for artifact in document["artifacts"]:
            artifact.pop("conv_algorithms", None)
        return document

    edit_manifest(bundle, drop)
    artifact = load_manifest(bundle).artifact("onnx")
    assert artifact.conv_algorithms == {} and artifact.conv_algorithm("encode_1") == "direct"

    def bad(document):
        document["artifacts"][0]["conv_algorithms"] = {"encode_1": "winograd8"}
        return document

    edit_manifest(bundle, bad)
    with pytest.raises(ArtifactError, match=r"conv_algorithms\['encode_1'\].*winograd8"):
        load_manifest(bundle)
