"""python -m benchmarks.memory: peak RSS, wall time and outputs of `python -m runtime.run` on one subject, for the
runtime of this checkout and of another (``--before``: a tree holding an older ``runtime/``), per backend.

Each run is `/usr/bin/time -v python -m runtime.run PEAKS --artifacts BUNDLE --backend B -o OUT --force --quiet
--report R` started in the tree whose runtime it measures. Peak RSS is the "Maximum resident set size" of
/usr/bin/time (the process's VmHWM: it starts no child); the report's own VmHWM and stage seconds are kept too.
The outputs of every run are compared with the first version's for the same backend, file by file: header
bytes and voxel arrays (dtype and values), bit for bit. The load average is recorded before and after each run.

    python -m benchmarks.memory --bundle B --peaks P --before /tmp/before [--backends onnxruntime,openvino]
Results: benchmarks/out/<timestamp>-memory/results.{json,md}; --publish copies them to benchmarks/results/.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from benchmarks.machine import REPO, load_average, machine_info

TIME = "/usr/bin/time"


def run_once(tree: Path, peaks: Path, bundle: Path, backend: str, out: Path) -> dict[str, Any]:
    report = out.with_suffix(".report.json")
    cmd = [TIME, "-v", sys.executable, "-m", "runtime.run", str(peaks), "--artifacts", str(bundle), "--backend",
           backend, "--device", "cpu", "-o", str(out), "--force", "--quiet", "--report", str(report)]
    load_before = load_average()
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=tree, capture_output=True, text=True)
    wall = time.perf_counter() - started
    result: dict[str, Any] = {"tree": str(tree), "backend": backend, "wall_s": round(wall, 1),
                              "load_before": load_before, "load_after": load_average(), "exit": done.returncode}
    if done.returncode != 0:
        result["error"] = done.stderr.split("\tCommand being timed")[0].strip()[-800:]
        return result
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    rep = json.loads(report.read_text())
    result.update(peak_rss_mib=round(int(match.group(1)) / 1024, 1) if match else None,
                  report_vmhwm_mib=rep.get("peak_rss_mb"), stages_s=rep.get("timings_s"),
                  slices=rep.get("slices"), outputs=len(rep.get("outputs", [])))
    return result


def compare_outputs(reference: Path, other: Path) -> dict[str, Any]:
    """Every NIfTI under ``reference`` against the same path under ``other``: header bytes, dtype, voxels."""
    files = sorted(p.relative_to(reference) for p in reference.rglob("*.nii.gz"))
    differing = []
    for rel in files:
        a, b = nib.load(reference / rel), nib.load(other / rel)
        va, vb = np.asanyarray(a.dataobj), np.asanyarray(b.dataobj)
        same = (a.header.binaryblock == b.header.binaryblock and va.dtype == vb.dtype
                and np.array_equal(va, vb))
        if not same:
            differing.append(str(rel))
    extra = sorted(str(p.relative_to(other)) for p in other.rglob("*.nii.gz")
                   if not (reference / p.relative_to(other)).exists())
    return {"files": len(files), "differing": differing, "only_in_other": extra,
            "bit_identical": not differing and not extra and bool(files)}


def markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [f"# runtime.run peak RSS and wall time, {doc['peaks_shape']} peaks, {doc['bundle']}", "",
             f"CPU: {m['cpu_model']}, {m['usable_cpus']} usable CPUs, {m['ram_gib']} GiB; flags "
             f"{', '.join(m['cpu_flags'])}. Other engineers' jobs ran on the same 2 cores: the load average "
             "(1, 5, 15 min) before and after each run is in the table.", "",
             "| backend | runtime | peak RSS MiB (/usr/bin/time -v) | wall s | network s | write s | load before | "
             "load after | outputs vs first row of the backend |", "|---|---|---|---|---|---|---|---|---|"]
    for r in doc["runs"]:
        s = r.get("stages_s") or {}
        cmp = r.get("compared")
        verdict = "reference" if cmp is None else ("bit-identical" if cmp["bit_identical"] else
                                                   f"DIFFER: {len(cmp['differing'])} of {cmp['files']}")
        lines.append(f"| {r['backend']} | {r['label']} | {r.get('peak_rss_mib')} | {r['wall_s']} | "
                     f"{s.get('network')} | {s.get('postprocess_write')} | {r['load_before']} | {r['load_after']} | "
                     f"{verdict} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.strip().splitlines()[0])
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--peaks", type=Path, required=True, help="the subject (e.g. an HCP-size 145x174x145x9 input)")
    p.add_argument("--before", type=Path, help="a tree with the older runtime/ (e.g. git archive <commit> runtime)")
    p.add_argument("--before-label", default="before")
    p.add_argument("--backends", default="onnxruntime,openvino")
    p.add_argument("--out", type=Path)
    p.add_argument("--publish", type=Path, help="also copy the results into this folder")
    args = p.parse_args(argv)
    out = args.out or REPO / "benchmarks" / "out" / f"{time.strftime('%Y%m%d-%H%M%S')}-memory"
    out.mkdir(parents=True, exist_ok=True)
    versions = ([(args.before_label, args.before)] if args.before else []) + [("this checkout", REPO)]
    runs = []
    for backend in args.backends.split(","):
        first = None
        for label, tree in versions:
            folder = out / f"{backend}-{label.replace(' ', '_')}"
            print(f"[memory] {backend} / {label} ...", file=sys.stderr, flush=True)
            r = {"label": label, **run_once(tree.resolve(), args.peaks.resolve(), args.bundle.resolve(), backend,
                                            folder)}
            if r["exit"] == 0:
                r["compared"] = None if first is None else compare_outputs(first, folder)
                first = first or folder
            print(f"[memory]   {json.dumps({k: r.get(k) for k in ('peak_rss_mib', 'wall_s', 'load_before')})}",
                  file=sys.stderr, flush=True)
            runs.append(r)
    doc = {"machine": machine_info(), "bundle": str(args.bundle), "peaks": str(args.peaks),
           "peaks_shape": list(nib.load(args.peaks).shape), "runs": runs}
    (out / "results.json").write_text(json.dumps(doc, indent=1))
    (out / "results.md").write_text(markdown(doc))
    print(markdown(doc))
    if args.publish:
        args.publish.mkdir(parents=True, exist_ok=True)
        for name in ("results.json", "results.md"):
            shutil.copy(out / name, args.publish / name)
    return 0 if all(r["exit"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
