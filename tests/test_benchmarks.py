"""The benchmark package on a tiny S=32 bundle: outputs exist and are well formed, the drift gate trips when the
tolerance is absurd, full mode measures a small subject. No timing is asserted."""
from __future__ import annotations

import json

import pytest

from benchmarks.__main__ import main
from benchmarks.drift import dice, gate
from benchmarks.flops import macs_per_slice
from benchmarks.report import BEGIN, END, publish
from tests.run_support import build_bundle, bundle_cache

FAST = ["--backends", "onnxruntime", "--per-row-s", "0.3"]


@pytest.fixture(scope="module")
def bundle(request):
    return str(build_bundle(bundle_cache(request.config), "tract_segmentation"))  # onnx, S=32, seed 0


@pytest.fixture(scope="module")
def quick(bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    status = main(["quick", "--bundle", bundle, "--out", str(out), *FAST])
    return status, out


def test_macs_per_slice_is_upstreams_figure():
    assert round(macs_per_slice(72, 144) / 1e9, 2) == 19.36


def test_quick_writes_json_markdown_png_and_passes(quick):
    status, out = quick
    assert status == 0
    result = json.loads((out / "results.json").read_text())
    ids = [row["id"] for row in result["rows"]]
    assert ids[0].startswith("live-jax") and "onnx/onnxruntime/cpu" in ids
    for key in ("cpu_model", "cpu_flags", "usable_cpus", "ram_gib", "versions"):
        assert key in result["machine"]
    assert {"numpy", "python", "onnxruntime", "jax"} <= set(result["machine"]["versions"])
    row = result["rows"][ids.index("onnx/onnxruntime/cpu")]
    assert row["latency"]["timed_calls"] >= 2 and row["latency"]["median_s"] > 0
    assert row["drift"]["max_abs"] <= 1e-5 and row["drift"]["slices"] == 8
    assert result["gate"]["passed"]
    upstream = [r for r in result["rows"] if r["id"].startswith("upstream-torch")]
    if upstream and not upstream[0]["skipped"]:
        assert result["upstream_vs_live"]["max_abs"] < 1e-4
    assert "| onnx/onnxruntime/cpu |" in (out / "results.md").read_text()
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gate_fails_with_an_absurd_tolerance(quick, bundle, tmp_path):
    result = json.loads((quick[1] / "results.json").read_text())
    assert any("onnx/onnxruntime/cpu" in f for f in gate(result["rows"], 1e-12))
    assert main(["quick", "--bundle", bundle, "--out", str(tmp_path), "--no-upstream", "--tolerance", "1e-12",
                 *FAST]) == 1
    assert not json.loads((tmp_path / "results.json").read_text())["gate"]["passed"]


def test_publish_copies_results_and_updates_the_readme_table(quick, tmp_path):
    out = quick[1]
    readme = tmp_path / "README.md"
    readme.write_text(f"# B\n\nbefore\n{BEGIN}\nold table\n{END}\nafter\n")
    paths = {k: out / f"results.{k}" for k in ("json", "md", "png")}
    copied = publish(paths, "some-cpu", readme=readme, results=tmp_path / "results")
    assert sorted(p.name for p in copied.values()) == ["some-cpu.json", "some-cpu.md", "some-cpu.png"]
    text = readme.read_text()
    assert "old table" not in text and "| onnx/onnxruntime/cpu |" in text and text.endswith("after\n")


def test_dice():
    import numpy as np

    a = np.zeros((4, 4), bool)
    assert dice(a, a) == 1.0
    b = a.copy()
    a[0, :2] = True
    b[0, 1:3] = True
    assert dice(a, b) == 0.5


def test_full_measures_a_small_subject_against_the_live_model(bundle, tmp_path):
    status = main(["full", "--bundle", bundle, "--out", str(tmp_path), "--no-upstream", "--subject-shape", "20",
                   "24", "18", *FAST])
    assert status == 0
    subject = json.loads((tmp_path / "results.json").read_text())["subject"]
    runs = subject["runs"]
    assert runs["live-jax (reference)"]["measured"]
    cli = runs["onnxruntime/cpu (onnx)"]
    assert cli["measured"] and "network" in cli["stages_s"]
    assert len(cli["agreement"]["dice"]) == 72 and cli["agreement"]["dice_min"] > 0.9


def test_cohort_throughput_configurations():
    """--configs: the shell loop, WxT settings and the runner's default, folded into the WxT it equals here."""
    from benchmarks.cohort_throughput import LOOP, configurations

    memory = 24 * 2**30
    assert configurations(["loop", "1x2", "2x1", "default"], 2, memory) == [
        (LOOP, None), ("cohort default = --workers 1 --threads-per-worker 2", ["--workers", "1",
                                                                              "--threads-per-worker", "2"]),
        ("cohort --workers 2 --threads-per-worker 1", ["--workers", "2", "--threads-per-worker", "1"])]
    assert configurations(["default", "loop"], 2, memory) == [("cohort (default workers)", []), (LOOP, None)]
    with pytest.raises(SystemExit, match="not loop, default or WxT"):
        configurations(["2-1"], 2, memory)
