"""Upstream TractSeg 2.10 on one subject, as its CLI does it, with the benchmark's random weights.

    python -m benchmarks.upstream_subject PEAKS --seed N --n-classes 72 --weights-dir DIR --out DIR --report FILE

bin/TractSeg's steps: nib.load -> get_fdata -> flip to MNI signs -> python_api.run_tractseg (crop, cube, 3 x 144
slices at batch size 1, mean fusion, bundle-specific thresholds, back to the input grid) -> remove small blobs
(<= 25 voxels) -> flip back -> write. The blob removal is the runtime's one-pass equivalent of upstream's
(tests/test_postprocess.py checks they give the same voxels): upstream's own takes ~16 min on random weights.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from benchmarks.engine_worker import peak_rss_mib  # VmHWM: this process's own peak


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.upstream_subject")
    p.add_argument("peaks", type=Path)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--n-classes", type=int, default=72)
    p.add_argument("--weights-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--report", type=Path, required=True)
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    os.environ["TRACTSEG_WEIGHTS_DIR"] = str(args.weights_dir)  # read by tractseg at import
    from benchmarks.runners import upstream_state_dict
    from benchmarks.upstream_net import save_upstream_checkpoint, upstream_network

    args.weights_dir.mkdir(parents=True, exist_ok=True)
    net = upstream_network(args.n_classes, args.seed)
    net.load_state_dict(upstream_state_dict(args.seed, args.n_classes), strict=True)
    save_upstream_checkpoint(net, args.weights_dir / "pretrained_weights_tract_segmentation_v3.npz")
    del net
    setup = time.perf_counter() - t0

    stages: dict[str, float] = {}
    mark = time.perf_counter()

    def stage(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        stages[name] = round(now - mark, 3)
        mark = now

    from tractseg.data import dataset_specific_utils
    from tractseg.libs import direction_merger, img_utils
    from tractseg.python_api import run_tractseg

    from runtime.outputs.postprocess import remove_small_blobs

    stage("imports")
    image = nib.load(args.peaks)
    data, flip_axes = img_utils.flip_axis_to_match_MNI_space(image.get_fdata(), image.affine)
    stage("load")

    network = {"s": 0.0}
    original = direction_merger.get_seg_single_img_3_directions

    def timed_network(*a, **k):
        t = time.perf_counter()
        try:
            return original(*a, **k)
        finally:
            network["s"] += time.perf_counter() - t

    direction_merger.get_seg_single_img_3_directions = timed_network
    seg = run_tractseg(data, "tract_segmentation", postprocess=False, nr_cpus=-1, inference_batch_size=1)
    stage("run_tractseg")
    seg = np.stack([remove_small_blobs(seg[..., i]) for i in range(seg.shape[-1])], axis=-1)
    stage("remove_small_blobs (runtime's equivalent)")
    for axis in flip_axes:
        seg = img_utils.flip_axis(seg, axis)
    bundles = dataset_specific_utils.get_bundle_names("All")[1:]
    out = args.out / "bundle_segmentations"
    out.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(bundles):
        nib.save(nib.Nifti1Image(seg[..., i].astype(np.uint8), image.affine), out / f"{name}.nii.gz")
    stage("write")
    report = {"checkpoint_setup_s": round(setup, 3), "stages_s": stages,
              "network_s": round(network["s"], 3), "inference_batch_size": 1, "peak_rss_mb": peak_rss_mib(),
              "how": "python_api.run_tractseg (postprocess=False) + runtime.remove_small_blobs, CLI flips"}
    args.report.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
