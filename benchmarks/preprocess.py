"""python -m benchmarks.preprocess: ``--preprocess``'s rigid registration (runtime.preprocess) on the real example
peaks moved by known rigid motions (up to 15 degrees and 10 mm), and its cost at 2.5 mm and at HCP size.

Rows, per motion M (moved subject world -> subject world; the moved subject is resampled with the library's own
peaks_to_mni onto a grid 8 voxels larger on each side, so its field of view differs from the template's):

* synthetic template (the unmoved subject's first-peak length): the recovered transform against M (rotation angle,
  translation at the world origin, largest displacement over the brain's voxels);
* upstream's MNI FA template (when TractSeg is installed): T0 = the unmoved subject registered to it, T_M = the
  moved subject registered to it; consistency = how far T_M is from T0 @ M (a perfect registration is consistent
  whatever T0's own error); pairwise = the largest difference between two motions' T_M @ inv(M).

Then the same at HCP size (the peaks upsampled to 1.25 mm, 146x174x146), one motion, with the time and peak memory
(VmHWM, reset before each step through /proc/self/clear_refs) of each step: registration, peaks_to_mni, and
to_subject of 72 uint8 masks and of one 3-channel TOM.

Prints a table and writes benchmarks/results/preprocess-<machine>.json (``--out``). Needs
../shared/data/tractseg_example_peaks_2.5mm.nii.gz (``--peaks``).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from runtime.host import peak_rss_mb
from runtime.preprocess import (find_template, grid_at_spacing, load_template, peaks_to_mni, register_rigid,
                                rigid_difference, subject_fa_like, to_subject)
from runtime.preprocess.grids import voxel_map

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PEAKS = REPO.parent / "shared" / "data" / "tractseg_example_peaks_2.5mm.nii.gz"
# (axis, degrees, translation mm): the largest motions asked for, and mixtures
MOTIONS = (((1, 2, 3), 15.0, (6.0, -8.0, 4.0)), ((0, 0, 1), 15.0, (0.0, 0.0, 0.0)), ((1, 0, 0), 12.0, (10.0, 0, 0)),
           ((0, 1, 0), 8.0, (0.0, -10.0, 0.0)), ((1, -1, 2), 5.0, (-5.0, 5.0, 5.0)), ((-2, 1, 1), 10.0, (3, 9, -4)),
           ((0, 0, 0), 0.0, (0.0, 0.0, 10.0)), ((3, 1, -1), 14.0, (-7.0, -5.0, 6.0)))


def rigid(axis: tuple[float, float, float], degrees: float, translation: tuple[float, float, float]) -> np.ndarray:
    """4x4: rotation by ``degrees`` about ``axis`` (through the world origin), then ``translation`` mm."""
    motion = np.eye(4)
    norm = np.linalg.norm(axis)
    if norm > 0 and degrees:
        k = np.asarray(axis, dtype=np.float64) / norm
        cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
        angle = np.deg2rad(degrees)
        motion[:3, :3] = np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross
    motion[:3, 3] = translation
    return motion


def centred_affine(shape: tuple[int, int, int], voxel_mm: float, las: bool = True) -> np.ndarray:
    """An axis-aligned affine (LAS or RAS) whose world origin is the grid's centre."""
    affine = np.diag([-voxel_mm if las else voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return affine


def synthetic_fa(shape: tuple[int, int, int] = (40, 48, 40), seed: int = 0) -> np.ndarray:
    """An FA-like blob: smoothed seeded noise inside an ellipsoid (bright tract-like ridges in a dim brain, 0
    outside), float32 in [0, 1]; asymmetric, so every rotation is visible."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.normal(size=shape), sigma=2.0)
    ridges = np.clip((noise - noise.mean()) / noise.std(), 0, None)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"), axis=-1)
    brain = np.sum((grid / np.array([0.8, 0.85, 0.75])) ** 2, axis=-1) <= 1.0
    fa = np.where(brain, 0.15 + 0.3 * ridges, 0.0)
    return np.clip(ndimage.gaussian_filter(fa, 0.7), 0, 1).astype(np.float32)


def moved_image(image: np.ndarray, affine: np.ndarray, motion: np.ndarray, moved_affine: np.ndarray,
                moved_shape: tuple[int, int, int]) -> np.ndarray:
    """The image seen by a subject whose world maps to ``image``'s world by ``motion``: moved(y) = image(motion y)."""
    return ndimage.affine_transform(image, voxel_map(moved_affine, affine, motion), output_shape=moved_shape,
                                    order=1, mode="constant")


def padded(affine: np.ndarray, shape: tuple[int, ...], pad: int) -> tuple[np.ndarray, tuple[int, int, int]]:
    grown = affine.copy()
    grown[:3, 3] -= affine[:3, :3] @ np.full(3, pad)
    return grown, tuple(int(n) + 2 * pad for n in shape[:3])  # type: ignore[return-value]


def brain_points(fa: np.ndarray, affine: np.ndarray, at_most: int = 4000) -> np.ndarray:
    index = np.argwhere(fa > 0.05)
    index = index[:: max(1, len(index) // at_most)]
    return index @ affine[:3, :3].T + affine[:3, 3]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def measured(step, *args, **kwargs):
    """(result, seconds, peak RSS MiB during the step, RSS MiB before it)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass
    before = rss_mb()
    start = time.perf_counter()
    result = step(*args, **kwargs)
    return result, round(time.perf_counter() - start, 2), peak_rss_mb(), before


def cpu_model() -> str:
    done = subprocess.run(["lscpu"], capture_output=True, text=True)
    lines = [line.split(":", 1)[1].strip() for line in done.stdout.splitlines() if line.startswith("Model name")]
    return lines[0] if lines else "unknown"


def errors(estimated: np.ndarray, expected: np.ndarray, points: np.ndarray) -> dict[str, float]:
    degrees, at_origin = rigid_difference(estimated, expected)
    _, worst = rigid_difference(estimated, expected, points)
    return {"rotation_deg": round(degrees, 3), "translation_mm": round(at_origin, 3), "max_brain_mm": round(worst, 3)}


def motion_rows(peaks: np.ndarray, affine: np.ndarray, template: tuple[np.ndarray, np.ndarray] | None) -> dict:
    fa0 = subject_fa_like(peaks, affine)
    points = brain_points(fa0, affine)
    moved_affine, moved_shape = padded(affine, peaks.shape, 8)
    out: dict = {"rows": []}
    unmoved: list[np.ndarray] = []  # each moved subject's registration, its known motion taken off
    if template is not None:
        t0, seconds, peak, _ = measured(register_rigid, fa0, affine, *template)
        out["unmoved_to_mni"] = {"transform": t0.round(4).tolist(), "seconds": seconds, "peak_rss_mb": peak,
                                 **errors(t0, np.eye(4), points)}
    for axis, degrees, translation in MOTIONS:
        motion = rigid(axis, degrees, translation)
        moved = peaks_to_mni(peaks, affine, np.linalg.inv(motion), moved_affine, moved_shape)
        fa = subject_fa_like(moved, moved_affine)
        estimated, seconds, peak, _ = measured(register_rigid, fa, moved_affine, fa0, affine)
        row = {"axis": list(axis), "degrees": degrees, "translation_mm": list(translation), "synthetic": {
            **errors(estimated, motion, points), "seconds": seconds, "peak_rss_mb": peak}}
        if template is not None:
            to_mni, seconds, peak, _ = measured(register_rigid, fa, moved_affine, *template)
            row["mni_template_consistency"] = {**errors(to_mni, t0 @ motion, points), "seconds": seconds,
                                               "peak_rss_mb": peak, "transform": to_mni.round(4).tolist()}
            unmoved.append(to_mni @ np.linalg.inv(motion))
        out["rows"].append(row)
        print(json.dumps(row), flush=True)
    if unmoved:
        pairs = [rigid_difference(a, b, points) for i, a in enumerate(unmoved) for b in unmoved[i + 1:]]
        out["mni_template_pairwise"] = {"rotation_deg": round(max(p[0] for p in pairs), 3),
                                        "max_brain_mm": round(max(p[1] for p in pairs), 3)}
    return out


def hcp_rows(peaks: np.ndarray, affine: np.ndarray, template: tuple[np.ndarray, np.ndarray] | None) -> dict:
    hcp_affine, hcp_shape = grid_at_spacing(affine, peaks.shape, 1.25)
    big = peaks_to_mni(peaks, affine, np.eye(4), hcp_affine, hcp_shape)
    fa0 = subject_fa_like(big, hcp_affine)
    motion = rigid(*MOTIONS[0])
    moved_affine, moved_shape = padded(hcp_affine, hcp_shape, 8)
    moved, seconds, peak, before = measured(peaks_to_mni, big, hcp_affine, np.linalg.inv(motion), moved_affine,
                                            moved_shape)
    out: dict = {"shape": list(moved_shape), "voxel_mm": 1.25,
                 "peaks_to_mni": {"seconds": seconds, "peak_rss_mb": peak, "rss_before_mb": before}}
    del big
    fa = subject_fa_like(moved, moved_affine)
    estimated, seconds, peak, before = measured(register_rigid, fa, moved_affine, fa0, hcp_affine)
    out["register_synthetic_template"] = {**errors(estimated, motion, brain_points(fa0, hcp_affine)),
                                          "seconds": seconds, "peak_rss_mb": peak, "rss_before_mb": before}
    if template is not None:
        t0 = register_rigid(subject_fa_like(peaks, affine), affine, *template)
        estimated, seconds, peak, before = measured(register_rigid, fa, moved_affine, *template)
        out["register_mni_template"] = {**errors(estimated, t0 @ motion, brain_points(fa0, hcp_affine)),
                                        "seconds": seconds, "peak_rss_mb": peak, "rss_before_mb": before}
    masks = (np.random.default_rng(0).random((*hcp_shape, 72)) > 0.9).astype(np.uint8)
    _, seconds, peak, before = measured(to_subject, masks, "mask", moved_affine, moved_shape, motion, hcp_affine)
    out["to_subject_72_masks"] = {"seconds": seconds, "peak_rss_mb": peak, "rss_before_mb": before}
    del masks
    tom = np.ascontiguousarray(moved[..., :3])
    _, seconds, peak, before = measured(to_subject, tom, "vectors", moved_affine, moved_shape, motion, hcp_affine)
    out["to_subject_tom"] = {"seconds": seconds, "peak_rss_mb": peak, "rss_before_mb": before}
    print(json.dumps(out), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.preprocess", description=__doc__.split("\n")[0])
    parser.add_argument("--peaks", type=Path, default=DEFAULT_PEAKS)
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default benchmarks/results/...)")
    parser.add_argument("--no-hcp", action="store_true", help="leave out the HCP-size rows")
    args = parser.parse_args(argv)
    if not args.peaks.is_file():
        parser.error(f"{args.peaks}: no such file (the shared example peaks)")
    from benchmarks.machine import machine_info, machine_kind

    image = nib.load(args.peaks)
    peaks = np.nan_to_num(np.asarray(image.dataobj, dtype=np.float32))
    try:
        template_path = find_template()
        template: tuple[np.ndarray, np.ndarray] | None = load_template(template_path)
    except Exception as error:  # noqa: BLE001 - the synthetic rows still run
        print(f"no MNI template: {error}")
        template_path, template = None, None
    info = machine_info()
    result = {"cpu_model_lscpu": cpu_model(), "machine": info, "peaks": str(args.peaks),
              "template": str(template_path) if template_path else None, "motions": motion_rows(
                  peaks, image.affine, template)}
    if not args.no_hcp:
        result["hcp"] = hcp_rows(peaks, image.affine, template)
    out = args.out or REPO / "benchmarks" / "results" / f"preprocess-{machine_kind(info)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    rows = result["motions"]["rows"]
    print(f"\n{result['cpu_model_lscpu']}; worst over {len(rows)} motions (synthetic template): rotation "
          f"{max(r['synthetic']['rotation_deg'] for r in rows):.3f} deg, brain displacement "
          f"{max(r['synthetic']['max_brain_mm'] for r in rows):.3f} mm; written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
