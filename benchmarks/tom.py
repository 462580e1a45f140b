"""python -m benchmarks.tom: TOM on an HCP-size subject, ours (python -m runtime.run --output_type TOM) against
upstream's CLI (TractSeg --output_type TOM) on identical weights and input, same machine, one after the other:
wall time and peak resident memory of each process tree (sampled every 50 ms), the outputs compared, and ours
for tract_segmentation beside them (the figure TOM must stay under).

    python -m benchmarks.tom --out /tmp/tom-bench [--tract-bundle DIR] [--shape 145 174 145]
    python -m benchmarks.tom --out /tmp/tom-bench --explain-part 3   (after a run: why voxels differ by > 1e-4)
    python -m benchmarks.tom --out /tmp/dm-bench --task dm_regression   (the same for bundle density maps)

``--explain-part N`` reruns part N's network both ways (ours through TractSegPipeline, upstream's run_tractseg
with its mask-and-normalise step left out) and prints, for every voxel whose written unit vectors differ by more
than 1e-4, the raw (unnormalised) vector lengths and their difference: normalising divides the fp32 difference of
two independent float32 convolution stacks by the vector's length.

Weights: upstream-format checkpoints of the four parts (random He-scaled, upstream's network with nearest
upsampling), made under --out unless present; our bundle is exported from them (S=144, ONNX, CPU). Upstream reads
TOM weights from ~/.tractseg whatever TRACTSEG_WEIGHTS_DIR says, so its process gets HOME=<out>/home.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from benchmarks.machine import machine_info
from benchmarks.subject import make_input
from benchmarks.tracking import run_measured, upstream_script
from runtime.models.bundles import model_for

SEEDS = (101, 102, 103, 104)
TOM = model_for("TOM")


def checkpoints(folder: Path) -> Path:
    from benchmarks.upstream_net import save_upstream_checkpoint, upstream_network

    folder.mkdir(parents=True, exist_ok=True)
    for part, seed in zip(TOM.parts, SEEDS):
        if not (folder / part.local_name).is_file():
            save_upstream_checkpoint(upstream_network(part.n_classes, seed, "nearest"), folder / part.local_name)
    return folder


def masks(folder: Path, peaks: Path) -> Path:
    """One blob mask per bundle on the peaks' grid (int32, as upstream's tract_segmentation writes them)."""
    from scipy import ndimage

    image = nib.load(peaks)
    if folder.is_dir():
        return folder
    work = folder.with_name(folder.name + ".partial")
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    brain = np.asarray(image.dataobj[..., 0]) != 0
    for name in TOM.bundles:
        noise = ndimage.gaussian_filter(rng.normal(size=image.shape[:3]).astype(np.float32), sigma=4)
        mask = ((noise > np.quantile(noise, 0.9)) & brain).astype(np.int32)
        nib.save(nib.Nifti1Image(mask, image.affine), work / f"{name}.nii.gz")
    work.rename(folder)
    return folder


def compare(ours: Path, theirs: Path) -> dict[str, float]:
    worst, mismatched, both_total = 0.0, 0, 0
    for name in TOM.bundles:
        a = np.asarray(nib.load(ours / f"{name}.nii.gz").dataobj)
        b = np.asarray(nib.load(theirs / f"{name}.nii.gz").dataobj)
        on_a, on_b = a.any(axis=-1), b.any(axis=-1)
        mismatched += int((on_a != on_b).sum())
        both = on_a & on_b
        both_total += int(both.sum())
        if both.any():
            worst = max(worst, float(np.abs(a[both] - b[both]).max()))
    return {"max_abs_unit_vectors": worst, "nonzero_mismatch_voxels": mismatched, "nonzero_voxels": both_total}


def explain(out: Path, bundle: Path, peaks: Path, mask_dir: Path, part: int) -> dict[str, object]:
    """Raw outputs of part ``part`` (1-4) from our runtime and from upstream's run_tractseg (its mask-and-normalise
    step replaced by the identity), at the voxels whose written TOMs differ by more than 1e-4."""
    from tractseg import python_api
    from tractseg.libs import img_utils

    from runtime.pipeline import TractSegPipeline

    names = TOM.parts[part - 1].bundles
    result = TractSegPipeline.open(bundle, output_type="TOM", warn_demo=False).predict(peaks, masks=mask_dir)
    ours_raw = {name: result.raw(name) for name in names}
    result.release()
    image = nib.load(peaks)
    data, flip_axes = img_utils.flip_axis_to_match_MNI_space(image.get_fdata(), image.affine)
    python_api.peak_utils.mask_and_normalize_peaks = lambda seg, *args, **kwargs: seg  # upstream's raw outputs
    seg = python_api.run_tractseg(data, "TOM", single_orientation=True, peak_regression_part=f"Part{part}")
    for axis in flip_axes:
        seg = img_utils.flip_axis(seg, axis)
    voxels, lengths = [], []
    for index, name in enumerate(names):
        theirs_raw = seg[..., 3 * index:3 * index + 3]
        ours = np.asarray(nib.load(out / "ours" / "TOM" / f"{name}.nii.gz").dataobj)
        theirs = np.asarray(nib.load(out / "upstream" / "TOM" / f"{name}.nii.gz").dataobj)
        inside = ours.any(axis=-1) & theirs.any(axis=-1)
        lengths.append(np.linalg.norm(ours_raw[name][inside], axis=-1))
        unit_diff = np.abs(ours - theirs).max(axis=-1)
        for where in map(tuple, np.argwhere(inside & (unit_diff > 1e-4))):
            a, b = ours_raw[name][where], theirs_raw[where]
            voxels.append({"bundle": name, "voxel": [int(i) for i in where], "unit_diff": float(unit_diff[where]),
                           "raw_length_ours": float(np.linalg.norm(a)), "raw_length_upstream": float(np.linalg.norm(b)),
                           "raw_diff": float(np.abs(a - b).max())})
    lengths = np.concatenate(lengths)
    raw_diff = max(float(np.abs(ours_raw[n] - seg[..., 3 * i:3 * i + 3]).max()) for i, n in enumerate(names))
    return {"part": part, "voxels_over_1e-4": voxels, "raw_max_abs_diff_whole_volume": raw_diff,
            "raw_length_inside_masks_percentiles": {q: float(np.percentile(lengths, q)) for q in (0.01, 1, 50)}}


def dm_regression(out: Path, peaks: Path, weights: Path, skip_upstream: bool) -> dict[str, object]:
    """dm_regression on the subject, ours then upstream's CLI (weights seed 105, bilinear, as tests/tom_support),
    and the maps compared (values < 0.01 zeroed on one side only: ties, counted)."""
    from benchmarks.upstream_net import save_upstream_checkpoint, upstream_network

    model = model_for("dm_regression")
    if not (weights / model.local_name).is_file():
        save_upstream_checkpoint(upstream_network(model.n_classes, 105, "bilinear"), weights / model.local_name)
    bundle = out / "dm-bundle"
    if not (bundle / "manifest.json").is_file():
        subprocess.run([sys.executable, "-m", "export", "--task", "dm_regression", "--weights",
                        str(weights / model.local_name), "--formats", "onnx", "--platforms", "cpu", "--out",
                        str(bundle), "--force"], check=True)
    results: dict[str, object] = {"machine": machine_info(), "shape": list(nib.load(peaks).shape[:3])}
    subprocess.run(["rm", "-rf", str(out / "ours-dm"), str(out / "upstream-dm")], check=True)
    seconds, peak, _ = run_measured([sys.executable, "-m", "runtime.run", str(peaks), "-o", str(out / "ours-dm"),
                                     "--artifacts", str(bundle), "--output_type", "dm_regression", "--quiet"])
    results["ours_dm_regression"] = {"wall_s": round(seconds, 1), "peak_rss_mib": round(peak)}
    print(f"ours dm_regression: {seconds:.1f} s, {peak:.0f} MiB", flush=True)
    if skip_upstream:
        return results
    home = os.environ.get("HOME")
    os.environ["HOME"] = str(out / "home")  # upstream's weights: ~/.tractseg
    try:
        seconds, peak, _ = run_measured([str(upstream_script("TractSeg")), "-i", str(peaks), "-o",
                                         str(out / "upstream-dm"), "--output_type", "dm_regression"])
    finally:
        if home is not None:
            os.environ["HOME"] = home
    results["upstream_dm_regression"] = {"wall_s": round(seconds, 1), "peak_rss_mib": round(peak)}
    print(f"upstream dm_regression: {seconds:.1f} s, {peak:.0f} MiB", flush=True)
    worst, ties, nonzero = 0.0, 0, 0
    for name in model.bundles:
        a = np.asarray(nib.load(out / "ours-dm" / "dm_regression" / f"{name}.nii.gz").dataobj)
        b = np.asarray(nib.load(out / "upstream-dm" / "dm_regression" / f"{name}.nii.gz").dataobj)
        one_side = (a == 0) != (b == 0)
        ties, nonzero = ties + int(one_side.sum()), nonzero + int((b != 0).sum())
        worst = max(worst, float(np.abs(a - b)[~one_side].max()))
    results["parity"] = {"max_abs": worst, "threshold_ties": ties, "nonzero_values_upstream": nonzero}
    print(f"parity: {results['parity']}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.tom", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--shape", type=int, nargs=3, default=(145, 174, 145))
    p.add_argument("--tract-bundle", type=Path, help="an S=144 tract_segmentation bundle: its run is measured too")
    p.add_argument("--skip-upstream", action="store_true")
    p.add_argument("--explain-part", type=int, choices=(1, 2, 3, 4), help="after a run: why voxels differ")
    p.add_argument("--task", choices=("TOM", "dm_regression"), default="TOM")
    args = p.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.task == "dm_regression":
        (out / "home" / ".tractseg").mkdir(parents=True, exist_ok=True)
        results = dm_regression(out, make_input(out, tuple(args.shape), 1), out / "home" / ".tractseg",
                                args.skip_upstream)
        (out / "results-dm_regression.json").write_text(json.dumps(results, indent=1) + "\n")
        return 0
    weights = checkpoints(out / "home" / ".tractseg")
    bundle = out / "tom-bundle"
    if not (bundle / "manifest.json").is_file():
        subprocess.run([sys.executable, "-m", "export", "--task", "TOM", "--weights-dir", str(weights), "--formats",
                        "onnx", "--platforms", "cpu", "--out", str(bundle), "--force"], check=True)
    peaks = make_input(out, tuple(args.shape), 1)
    mask_dir = masks(out / "masks", peaks)
    if args.explain_part:
        os.environ["HOME"] = str(out / "home")  # upstream's TOM weights: ~/.tractseg
        found = explain(out, bundle, peaks, mask_dir, args.explain_part)
        print(json.dumps(found, indent=1))
        (out / f"explain-part{args.explain_part}.json").write_text(json.dumps(found, indent=1) + "\n")
        return 0
    results: dict[str, object] = {"machine": machine_info(), "shape": list(args.shape)}
    ours = out / "ours"
    subprocess.run(["rm", "-rf", str(ours), str(out / "upstream"), str(out / "tract")], check=True)
    seconds, peak, _ = run_measured([sys.executable, "-m", "runtime.run", str(peaks), "-o", str(ours), "--artifacts",
                                     str(bundle), "--output_type", "TOM", "--tract_segmentations_path",
                                     str(mask_dir), "--quiet"])
    results["ours_tom"] = {"wall_s": round(seconds, 1), "peak_rss_mib": round(peak)}
    print(f"ours TOM: {seconds:.1f} s, {peak:.0f} MiB", flush=True)
    if args.tract_bundle:
        seconds, peak, _ = run_measured([sys.executable, "-m", "runtime.run", str(peaks), "-o", str(out / "tract"),
                                         "--artifacts", str(args.tract_bundle.resolve()), "--quiet"])
        results["ours_tract_segmentation"] = {"wall_s": round(seconds, 1), "peak_rss_mib": round(peak)}
        print(f"ours tract_segmentation: {seconds:.1f} s, {peak:.0f} MiB", flush=True)
    if not args.skip_upstream:
        home = os.environ.get("HOME")
        os.environ["HOME"] = str(out / "home")  # upstream's TOM weights: ~/.tractseg (TRACT_SEG_HOME)
        try:
            seconds, peak, _ = run_measured([str(upstream_script("TractSeg")), "-i", str(peaks), "-o",
                                             str(out / "upstream"), "--output_type", "TOM",
                                             "--tract_segmentations_path", str(mask_dir)])
        finally:
            if home is not None:
                os.environ["HOME"] = home
        results["upstream_tom"] = {"wall_s": round(seconds, 1), "peak_rss_mib": round(peak)}
        print(f"upstream TOM: {seconds:.1f} s, {peak:.0f} MiB", flush=True)
        results["parity"] = compare(ours / "TOM", out / "upstream" / "TOM")
        print(f"parity: {results['parity']}", flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
