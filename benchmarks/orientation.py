"""python -m benchmarks.orientation: the orientation check (runtime.orientation) on every variant of the real example
peaks, on synthetic fields and on DWIs simulated from the peaks; the table that calibrates ``confident``.

Rows: the real peaks as given (LAS) and with each world axis flipped; the same peaks stored RAS (grid reversed with
nibabel, world directions kept) and RAS with x flipped; an oblique copy (grid and directions rotated 10 degrees);
upsampled to HCP size; small crops; the peaks as the network sees them after the pipeline's MNI flip (LAS and RAS
storage, and with upstream's optional ``flip_peaks=True`` x negation); noise fields (random directions, shuffled
directions: no verdict expected); synthetic curved tracts; DWIs simulated from the peaks (one shell) with each
bvecs row negated, stored LAS and RAS; with --with-engine the dipy engine's peaks of simulated LAS and RAS DWIs
(as written and as the network sees them). Also times the check on the real peaks and at HCP size (145x174x145).

Prints the table and writes benchmarks/results/orientation-<machine>.json (``--out`` to change). Needs
../shared/data/tractseg_example_peaks_2.5mm.nii.gz (``--peaks``); without it only the synthetic rows run.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from runtime.io.geometry import flip, mni_flip_axes
from runtime.orientation import apply_flip, check_bvecs, check_peaks, flip_bvecs
from runtime.orientation.result import OrientationResult

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PEAKS = REPO.parent / "shared" / "data" / "tractseg_example_peaks_2.5mm.nii.gz"
HCP_SHAPE = (145, 174, 145)


def arc_tract_peaks(shape: tuple[int, int, int] = (40, 40, 40), voxel_mm: float = 2.0, radius_mm: float = 34.0,
                    tube_mm: float = 4.0, jitter_deg: float = 10.0, seed: int = 0,
                    affine: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Curved tracts in grey matter: four circular tubes (radii 0.4-1 x ``radius_mm``, tube radius ``tube_mm``) in
    four oblique planes through the grid's centre (later ones win where they cross), fibres along the arcs
    (jittered by ``jitter_deg``, strong first peak), in a background of weak random directions (isotropic-like
    tissue: stepped on, never scored). Peaks (X, Y, Z, 9) float32, first peak only, and the affine (default LAS,
    ``voxel_mm`` isotropic, centred).
    A smooth field of parallel or concentric fibres would not do: every neighbour of such a field is parallel,
    whichever way a flipped direction points."""
    if affine is None:
        affine = np.diag([-voxel_mm, voxel_mm, voxel_mm, 1.0])
        affine[:3, 3] = -affine[:3, :3] @ ((np.array(shape) - 1) / 2)
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(float)
    world = grid @ affine[:3, :3].T + affine[:3, 3]
    background = rng.normal(size=world.shape)
    field = 0.1 * background / np.linalg.norm(background, axis=-1, keepdims=True)
    for normal, radius in (((1.0, 1.0, 1.0), radius_mm), ((1.0, -2.0, 0.5), 0.6 * radius_mm),
                           ((-2.0, 0.5, 1.0), 0.8 * radius_mm), ((0.3, 1.0, -1.5), 0.4 * radius_mm)):
        n = np.array(normal) / np.linalg.norm(normal)
        height = world @ n
        in_plane = world - height[..., None] * n
        distance = np.linalg.norm(in_plane, axis=-1)
        tube = np.hypot(height, distance - radius) <= tube_mm
        tangent = np.cross(n, in_plane / np.maximum(distance, 1e-9)[..., None])
        tangent += np.deg2rad(jitter_deg) * rng.normal(size=tangent.shape) / np.sqrt(2)
        tangent /= np.linalg.norm(tangent, axis=-1, keepdims=True)
        field[tube] = tangent[tube] * rng.uniform(0.6, 1.0, size=(int(tube.sum()), 1))
    peaks = np.zeros((*shape, 9), dtype=np.float32)
    peaks[..., :3] = field
    return peaks, affine


def reoriented(data: np.ndarray, affine: np.ndarray, code: str) -> tuple[np.ndarray, np.ndarray]:
    """The same image stored with axis codes ``code`` (e.g. "RAS"): nibabel's as_reoriented moves the voxels and
    the affine; the vectors stay as they are (MRtrix peaks are world vectors)."""
    image = nib.Nifti1Image(data, affine)
    ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(affine),
                                           nib.orientations.axcodes2ornt(tuple(code)))
    moved = image.as_reoriented(ornt)
    return np.asarray(moved.dataobj), moved.affine


def network_view(data: np.ndarray, affine: np.ndarray, negate_x: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The peaks as the network sees them: the pipeline's MNI flip of the array (vectors untouched, as upstream's
    CLI with flip_peaks=False; ``negate_x`` adds upstream's optional x negation), with the affine of that view."""
    axes = mni_flip_axes(affine)
    view = np.ascontiguousarray(flip(data, axes))
    flipped = affine.copy()
    for axis in axes:
        flipped[:3, axis] *= -1
        flipped[:3, 3] += affine[:3, axis] * (data.shape[axis] - 1)
    return (apply_flip(view, flipped, "x") if negate_x else view), flipped


def oblique(data: np.ndarray, affine: np.ndarray, degrees: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """Grid and directions rotated together about an oblique axis: the same brain in a tilted scanner frame."""
    axis = np.array([1.0, 2.0, 3.0]) / np.sqrt(14)
    angle = np.deg2rad(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    turned = np.eye(4)
    turned[:3, :3] = rotation
    vectors = data.reshape(*data.shape[:3], 3, 3) @ rotation.T.astype(np.float32)
    return vectors.reshape(data.shape).astype(np.float32), turned @ affine


def _row(name: str, expected: str, result: OrientationResult) -> dict[str, object]:
    """``expected``: the reading that must win with confidence, or "-" (noise, small crops): no confident flip."""
    ok = (result.flip == expected and result.confident) if expected != "-" else not result.flipped
    return {"variant": name, "expected": expected, "ok": bool(ok), **result.as_dict()}


def peak_rows(path: Path) -> tuple[list[dict[str, object]], dict[str, object]]:
    from benchmarks.diffusion_brain import read_peaks
    from runtime.io.nifti_io import load_peaks

    rows = []
    started = time.perf_counter()
    data, affine = load_peaks(path)
    load_s = time.perf_counter() - started
    for axis in ("none", "x", "y", "z"):
        rows.append(_row(f"real LAS, {axis} flipped" if axis != "none" else "real LAS (as given)", axis,
                         check_peaks(apply_flip(data, affine, axis), affine)))
    ras, ras_affine = reoriented(data, affine, "RAS")
    rows.append(_row("real stored RAS", "none", check_peaks(ras, ras_affine)))
    rows.append(_row("real stored RAS, x flipped", "x", check_peaks(apply_flip(ras, ras_affine, "x"), ras_affine)))
    rows.append(_row("real stored LPI", "none", check_peaks(*reoriented(data, affine, "LPI"))))
    rows.append(_row("real oblique (10 deg)", "none", check_peaks(*oblique(data, affine))))
    for label, (view, view_affine) in (("network view of LAS storage", network_view(data, affine)),
                                       ("network view of RAS storage", network_view(ras, ras_affine)),
                                       ("network view of RAS + flip_peaks x", network_view(ras, ras_affine, True))):
        rows.append(_row(label, "x" if "flip_peaks" in label else "none", check_peaks(view, view_affine)))
    same = bool(np.array_equal(network_view(data, affine)[0], network_view(ras, ras_affine)[0]))
    for corner in ((20, 25, 20), (30, 40, 35), (10, 30, 40), (40, 50, 20)):
        crop = tuple(slice(c, c + 24) for c in corner)
        rows.append(_row(f"real crop 24^3 at {corner}", "-", check_peaks(data[crop], affine)))
    rng = np.random.default_rng(0)
    mask = np.linalg.norm(data[..., :3], axis=-1) > 0
    noise = data.copy()
    noise[mask, :3] = rng.normal(size=(int(mask.sum()), 3)) * np.linalg.norm(data[mask, :3], axis=-1)[:, None]
    rows.append(_row("noise: random directions in the brain", "-", check_peaks(noise, affine)))
    shuffled = data.copy()
    shuffled[mask] = data[mask][rng.permutation(int(mask.sum()))]
    rows.append(_row("noise: peaks shuffled across the brain", "-", check_peaks(shuffled, affine)))

    big, big_affine = read_peaks(path, upsample=2)
    big = np.ascontiguousarray(big[:HCP_SHAPE[0], :HCP_SHAPE[1], :HCP_SHAPE[2]])
    times = []
    for _ in range(3):
        result = check_peaks(big, big_affine)
        times.append(result.seconds)
    rows.append(_row(f"real upsampled x2 to {'x'.join(map(str, HCP_SHAPE))}", "none", result))
    real_times = [check_peaks(data, affine).seconds for _ in range(5)]
    timing = {"load_peaks_s": round(load_s, 3), "check_real_s_median": round(float(np.median(real_times)), 4),
              "check_hcp_s_median": round(float(np.median(times)), 4), "hcp_shape": list(HCP_SHAPE),
              "network_view_identical_for_las_and_ras": same}
    return rows, timing


def dwi_rows(path: Path, folder: Path, n_dirs: int) -> list[dict[str, object]]:
    from benchmarks.diffusion_brain import read_peaks, simulate_from_peaks

    rows = []
    data, affine = read_peaks(path)
    for code in ("LAS", "RAS"):
        stored = folder / f"peaks_{code}.nii.gz"
        nib.Nifti1Image(*reoriented(data, affine, code)).to_filename(stored)
        phantom = simulate_from_peaks(stored, folder / code, n_dirs=n_dirs, n_b0=3, seed=1)
        table = np.loadtxt(phantom.bvecs)
        for axis in ("none", "x", "y", "z") if code == "LAS" else ("none", "x"):
            bvecs = folder / code / f"{axis}.bvecs"
            np.savetxt(bvecs, flip_bvecs(table, axis), fmt="%.8f")
            result = check_bvecs(phantom.dwi, phantom.bvals, bvecs, phantom.mask)
            label = "as given" if axis == "none" else f"bvecs row {axis} negated"
            rows.append(_row(f"DWI sim ({code}, {n_dirs} dirs b=1000), {label}", axis, result))
    return rows


def engine_rows(path: Path, folder: Path, engine: str = "dipy") -> list[dict[str, object]]:
    """Peaks computed by one of the repository's engines (``dipy`` or ``mrtrix``: sh2peaks, world directions)
    from a DWI simulated from a 40^3 crop of the real peaks and stored LAS or RAS, checked as written and as the
    network sees them; and from the same DWI with its bvecs' x row negated (a flipped b-vector axis)."""
    from benchmarks.diffusion_brain import read_peaks, simulate_from_peaks
    from runtime.diffusion import peaks_from_dwi

    rows = []
    data, affine = read_peaks(path, crop=tuple(slice(a, a + 40) for a in (16, 22, 18)))
    for code in ("LAS", "RAS"):
        stored = folder / f"crop_{code}.nii.gz"
        nib.Nifti1Image(*reoriented(data, affine, code)).to_filename(stored)
        phantom = simulate_from_peaks(stored, folder / f"engine_{code}", n_dirs=45, n_b0=3, seed=0)
        made = peaks_from_dwi(phantom.dwi, phantom.bvals, phantom.bvecs, phantom.mask, engine=engine, nthreads=1,
                              workdir=folder / f"engine_{code}" / "out")
        peaks, peaks_affine = np.nan_to_num(made.load()), nib.load(made.peaks).affine
        name = f"{engine}-engine peaks of a {code} DWI"
        rows.append(_row(f"{name}, as written", "none", check_peaks(peaks, peaks_affine)))
        rows.append(_row(f"{name}, network view", "none", check_peaks(*network_view(peaks, peaks_affine))))
        rows.append(_row(f"{name}, network view + x negated", "x",
                         check_peaks(*network_view(peaks, peaks_affine, negate_x=True))))
        flipped_bvecs = folder / f"engine_{code}" / "flipped.bvecs"
        table = np.loadtxt(phantom.bvecs, ndmin=2)
        table[0] *= -1
        np.savetxt(flipped_bvecs, table, fmt="%.8f")
        made = peaks_from_dwi(phantom.dwi, phantom.bvals, flipped_bvecs, phantom.mask, engine=engine, nthreads=1,
                              workdir=folder / f"engine_{code}" / "flipped")
        rows.append(_row(f"{name} with bvecs row x negated", "x",
                         check_peaks(np.nan_to_num(made.load()), nib.load(made.peaks).affine)))
    return rows


def synthetic_rows() -> list[dict[str, object]]:
    peaks, affine = arc_tract_peaks()
    rows = [_row(f"arc tracts, {axis} flipped" if axis != "none" else "arc tracts (as given)", axis,
                 check_peaks(apply_flip(peaks, affine, axis), affine)) for axis in ("none", "x", "y", "z")]
    rng = np.random.default_rng(1)
    noise = np.zeros_like(peaks)
    noise[..., :3] = rng.normal(size=(*peaks.shape[:3], 3))
    rows.append(_row("noise: random directions everywhere", "-", check_peaks(noise, affine)))
    return rows


def table(rows: list[dict[str, object]]) -> str:
    lines = [f"| {'variant':<50} | exp  | flip | conf | margin |    z  | voxels | none  |   x   |   y   |   z   | ok |",
             "|" + "---|" * 12]
    for r in rows:
        s = r["scores"]
        confident = "yes" if r["confident"] else "no"
        lines.append(f"| {r['variant']:<50} | {r['expected']:<4} | {r['flip']:<4} | {confident:<4}"
                     f" | {r['margin']:.4f} | {r['z']:5.1f} | {r['voxels']:6d} | {s['none']:.3f} | {s['x']:.3f} |"
                     f" {s['y']:.3f} | {s['z']:.3f} | {'ok' if r['ok'] else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.machine import machine_info, machine_kind

    p = argparse.ArgumentParser(prog="python -m benchmarks.orientation", description=__doc__.split("\n\n")[0])
    p.add_argument("--peaks", type=Path, default=DEFAULT_PEAKS)
    p.add_argument("--dirs", type=int, default=30, help="diffusion directions of the simulated DWIs (one shell)")
    p.add_argument("--no-dwi", action="store_true", help="leave out the simulated DWIs (needs dipy)")
    p.add_argument("--with-engine", action="store_true",
                   help="also an engine's peaks of simulated LAS / RAS DWIs (~2 minutes more)")
    p.add_argument("--engine", choices=("dipy", "mrtrix"), default="dipy", help="that engine (default dipy)")
    p.add_argument("--engine-only", action="store_true", help="only the engine's rows")
    p.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/orientation-<machine>.json)")
    args = p.parse_args(argv)
    info = machine_info()
    rows, timing = ([] if args.engine_only else synthetic_rows()), {}
    if args.peaks.is_file():
        if not args.engine_only:
            real, timing = peak_rows(args.peaks)
            rows += real
        if not args.no_dwi:
            with tempfile.TemporaryDirectory(prefix="orientation-") as folder:
                rows += [] if args.engine_only else dwi_rows(args.peaks, Path(folder), args.dirs)
                if args.with_engine or args.engine_only:
                    rows += engine_rows(args.peaks, Path(folder), args.engine)
    else:
        print(f"{args.peaks} not found: synthetic rows only")
    print(table(rows))
    print(json.dumps(timing))
    print(f"CPU: {info['cpu_model']} ({info['usable_cpus']} usable), load at start {info['load_average_at_start']}")
    out = args.out or REPO / "benchmarks" / "results" / f"orientation-{machine_kind(info)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": info, "timing": timing, "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
