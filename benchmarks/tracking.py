"""python -m benchmarks tracking: runtime.tracking / runtime.tractometry against upstream's Tracking / Tractometry
on the same synthetic curved bundles, same machine, same run; also the phantom and the upstream runner that
tests/test_tracking.py and tests/test_tractometry.py use (one place for both).

The phantom: a half-ring tube (radius ``ring`` voxels, tube radius ``tube``) in the x-z plane, its TOM the unit
tangent in world space, beginnings / endings the tube's first / last ``end_degrees`` of arc, written as real NIfTI
files in upstream's layout (``TOM/``, ``bundle_segmentations/``, ``endings_segmentations/``) plus ``peaks.nii.gz``
and an ``FA.nii.gz`` that varies along and across the bundle. The affine has a positive x axis, so upstream's MNI
flip of x (and its flipped affine) is exercised; ``signs`` gives other orientations (HCP's: x negative).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np


@dataclass(frozen=True)
class Phantom:
    shape: tuple[int, int, int] = (48, 20, 36)
    spacing: float = 2.0
    ring: float = 14.0
    tube: float = 3.0
    end_degrees: float = 14.0
    signs: tuple[int, int, int] = (1, 1, 1)  # of the affine's diagonal; (-1, 1, 1) is HCP's orientation

    @property
    def affine(self) -> np.ndarray:
        a = np.diag([*(self.spacing * np.asarray(self.signs)), 1.0])
        a[:3, 3] = [-40.0, -20.0, -10.0]
        return a


FULL_SIZE = Phantom(shape=(145, 174, 145), spacing=1.25, ring=30.0, tube=4.0, end_degrees=10.0)


def write_phantom(root: Path, bundles: list[str], phantom: Phantom = Phantom(), empty: tuple[str, ...] = (),
                  endings_only: tuple[str, ...] = ()) -> Path:
    """Write the phantom for each bundle (same geometry) under ``root/tractseg_output``; returns that folder.
    Bundles in ``empty`` get an all-zero bundle mask (upstream's empty-tractogram case); bundles in
    ``endings_only`` get only their endings masks (upstream's Tractometry opens every bundle's beginnings)."""
    out = root / "tractseg_output"
    for sub in ("TOM", "bundle_segmentations", "endings_segmentations"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    x, y, z = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in phantom.shape], indexing="ij")
    cx, cy, cz = phantom.shape[0] / 2, phantom.shape[1] / 2, 6.0
    radial = np.hypot(x - cx, z - cz)
    angle = np.degrees(np.arctan2(z - cz, x - cx))
    inside = (np.hypot(radial - phantom.ring, y - cy) <= phantom.tube) & (z >= cz)
    tangent = np.stack([-(z - cz), np.zeros_like(x), x - cx], axis=-1) / np.maximum(radial, 1e-6)[..., None]
    tom = np.where(inside[..., None], tangent * np.asarray(phantom.signs), 0).astype(np.float32)  # world space
    beginnings = inside & (angle <= phantom.end_degrees)
    endings = inside & (angle >= 180 - phantom.end_degrees)
    fa = (0.3 + 0.4 * inside * (1 + np.cos(np.radians(angle))) / 2 + 0.05 * np.sin(y)).astype(np.float32)
    affine = phantom.affine
    for bundle in endings_only:
        nib.save(nib.Nifti1Image(beginnings.astype(np.uint8), affine),
                 str(out / "endings_segmentations" / f"{bundle}_b.nii.gz"))
    for bundle in bundles:
        mask = inside if bundle not in empty else np.zeros_like(inside)
        nib.save(nib.Nifti1Image(tom, affine), str(out / "TOM" / f"{bundle}.nii.gz"))
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), str(out / "bundle_segmentations" / f"{bundle}.nii.gz"))
        nib.save(nib.Nifti1Image(beginnings.astype(np.uint8), affine),
                 str(out / "endings_segmentations" / f"{bundle}_b.nii.gz"))
        nib.save(nib.Nifti1Image(endings.astype(np.uint8), affine),
                 str(out / "endings_segmentations" / f"{bundle}_e.nii.gz"))
    peaks = np.concatenate([tom, np.zeros(phantom.shape + (6,), np.float32)], axis=-1)
    nib.save(nib.Nifti1Image(peaks, affine), str(root / "peaks.nii.gz"))
    nib.save(nib.Nifti1Image(fa, affine), str(root / "FA.nii.gz"))
    return out


def upstream_script(name: str) -> Path:
    """Upstream's console script (``Tracking``, ``Tractometry``) beside this interpreter."""
    return Path(sys.executable).parent / name


def _tree_rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants (upstream's pool workers), from /proc."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(status.split("VmRSS:")[1].split()[0]) if "VmRSS:" in status else 0
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue
    return total / 1024


def run_measured(command: list[str]) -> tuple[float, float, str]:
    """Run ``command``; (wall seconds, peak resident MiB of its process tree sampled every 50 ms, stderr).
    (Not ru_maxrss: on Linux a child's ru_maxrss keeps the parent's high-water mark from before the exec.)
    Raises RuntimeError with the stderr tail when it fails."""
    import tempfile

    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, text=True)
        peak = 0.0
        while process.poll() is None:
            peak = max(peak, _tree_rss_mib(process.pid))
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        err.seek(0)
        stderr = err.read()
    if process.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed ({process.returncode}): {stderr[-2000:]}")
    return seconds, peak, stderr


def upstream_tracking(peaks: Path, output_dir: Path, bundles: list[str], nr_fibers: int,
                      tracking_format: str = "trk", nr_cpus: int = -1, tracking_dir: str = "auto",
                      dilation: int = 0) -> tuple[float, float]:
    """Upstream's ``Tracking`` CLI (its default ``prob`` tracker); (seconds, peak MiB)."""
    seconds, mib, _ = run_measured([sys.executable, str(upstream_script("Tracking")), "-i", str(peaks), "-o",
                                    str(output_dir), "--bundles", ",".join(bundles), "--nr_fibers", str(nr_fibers),
                                    "--tracking_format", tracking_format, "--nr_cpus", str(nr_cpus),
                                    "--tracking_dir", tracking_dir, "--tracking_dilation", str(dilation)])
    return seconds, mib


def ours_tracking(peaks: Path, output_dir: Path, bundles: list[str], nr_fibers: int,
                  tracking_format: str = "trk", tracking_dir: str = "auto", seed: int = 0,
                  dilation: int = 0) -> tuple[float, float]:
    """``python -m runtime.tracking`` with the same flags; (seconds, peak MiB)."""
    seconds, mib, _ = run_measured([sys.executable, "-m", "runtime.tracking", "-i", str(peaks), "-o",
                                    str(output_dir), "--bundles", ",".join(bundles), "--nr_fibers", str(nr_fibers),
                                    "--tracking_format", tracking_format, "--tracking_dir", tracking_dir,
                                    "--seed", str(seed), "--tracking_dilation", str(dilation), "--quiet"])
    return seconds, mib


def tractometry_command(upstream: bool, tracking_dir: Path, csv: Path, endings_dir: Path, scalar: Path,
                        tracking_format: str = "trk") -> list[str]:
    head = [sys.executable, str(upstream_script("Tractometry"))] if upstream else [
        sys.executable, "-m", "runtime.tractometry", "--quiet"]
    return head + ["-i", str(tracking_dir), "-o", str(csv), "-e", str(endings_dir), "-s", str(scalar),
                   "--tracking_format", tracking_format]


def add_options(p) -> None:
    p.add_argument("--bundles", type=int, default=3, help="how many bundles (each the full-size curved phantom)")
    p.add_argument("--nr-fibers", type=int, default=2000)
    p.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    p.add_argument("--no-upstream", action="store_true", help="only runtime.tracking / runtime.tractometry")
    p.add_argument("--upstream-bundles", type=int, metavar="K",
                   help="upstream tracks only the first K bundles and its time for all is K's x N / K (labelled "
                        "extrapolated; its bundle loop is sequential and every bundle is the same phantom)")


def main(args) -> int:
    import tempfile

    from benchmarks.machine import machine_info, machine_kind
    from runtime.tractometry import TRACTOMETRY_BUNDLES

    info = machine_info()
    from runtime.models.bundles import model_for

    names = list(TRACTOMETRY_BUNDLES) + [b for b in model_for("tract_segmentation").bundles
                                         if b not in TRACTOMETRY_BUNDLES]  # the 50 profiled first, then the rest
    bundles = names[: args.bundles]
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-tracking-"))
    out = write_phantom(work, bundles, FULL_SIZE,
                        endings_only=tuple(b for b in TRACTOMETRY_BUNDLES if b not in bundles))
    peaks = work / "peaks.nii.gz"
    result = {"machine": info, "bundles": bundles, "nr_fibers": args.nr_fibers, "phantom": FULL_SIZE.__dict__,
              "note": "every bundle is the same full-size curved phantom; one process call per tool for all bundles"}
    seconds, mib = ours_tracking(peaks, out, bundles, args.nr_fibers, tracking_dir="ours")
    per_bundle = {b: json.loads((out / "ours" / f"{b}.trk.json").read_text())["seconds"] for b in bundles}
    result["ours"] = {"tracking_s": seconds, "peak_mib": mib, "per_bundle_s": per_bundle}
    seconds, mib, _ = run_measured(tractometry_command(False, out / "ours", work / "ours.csv",
                                                       out / "endings_segmentations", work / "FA.nii.gz"))
    result["ours"].update(tractometry_s=seconds, tractometry_peak_mib=mib)
    if not args.no_upstream:
        measured = bundles[: args.upstream_bundles or len(bundles)]
        seconds, mib = upstream_tracking(peaks, out, measured, args.nr_fibers, tracking_dir="upstream")
        result["upstream"] = {"tracking_s": seconds * len(bundles) / len(measured), "peak_mib": mib,
                              "tracking_s_measured": seconds, "bundles_measured": len(measured),
                              "extrapolated": len(measured) < len(bundles)}
        seconds, mib, _ = run_measured(tractometry_command(True, out / "ours", work / "upstream.csv",
                                                           out / "endings_segmentations", work / "FA.nii.gz"))
        result["upstream"].update(tractometry_s=seconds, tractometry_peak_mib=mib)
        result["ratio_tracking"] = result["ours"]["tracking_s"] / result["upstream"]["tracking_s"]
        result["ratio_tractometry"] = result["ours"]["tractometry_s"] / result["upstream"]["tractometry_s"]
    result["load_average_at_end"] = os.getloadavg()
    target = Path(__file__).resolve().parent / "results" / f"tracking-{machine_kind(info)}-n{len(bundles)}.json"
    target.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2, default=str))
    print(f"[bench] {target}", file=sys.stderr)
    return 0
