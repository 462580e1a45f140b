"""The markdown of ``python -m benchmarks diffusion-dice`` (benchmarks/diffusion_dice.py): every figure printed
comes from its results.json."""
from __future__ import annotations


def _steps(timings: dict | None) -> str:
    if not timings:
        return ""
    return ", ".join(f"{k} {v:.1f}" for k, v in timings.items() if k != "total")


def _crop(crop: list | None) -> str:
    return "" if not crop else " cropped to " + ",".join(f"{a}:{b}" for a, b in crop)


def _angle(row: dict) -> str:
    return "-" if row["median"] is None else f"{row['median']:.2f} / {row['p95']:.2f}"


def _dice_rows(table: dict, where: str) -> list[str]:
    lines = ["", f"| masks ({where}) | bundles compared | empty in both | empty in one | Dice mean | median | min "
                 f"| lowest |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for pair, d in table.items():
        lowest = ", ".join(f"{k} {v:.3f}" for k, v in d["lowest"][:3])
        mean = "-" if d["mean"] is None else f"{d['mean']:.4f}"
        median = "-" if d["median"] is None else f"{d['median']:.4f}"
        low = "-" if d["min"] is None else f"{d['min']:.4f}"
        lines.append(f"| {pair.replace('_vs_', ' vs ')} | {d['compared']} | {d['empty_in_both']} | "
                     f"{d['empty_in_one']} | {mean} | {median} | {low} | {lowest} |")
    return lines


def markdown(r: dict) -> str:
    m, s = r["machine"], r["simulation"]
    lines = [f"CPU: {m['cpu_model']} ({m['usable_cpus']} usable cores, {m['ram_gib']} GiB), load average "
             f"{m['load_average_at_start']} at the start, {m.get('load_average_at_end')} at the end; "
             f"{r['csd_type']}, --nr_cpus {r['threads']}; bundle {r['bundle']['dir']}",
             "",
             f"DWI simulated from {s['peaks']}{_crop(s.get('crop'))} (x{s['upsample']} per axis): "
             f"grid {s['shape']} at {s['voxel_mm']} mm, "
             f"{s['mask_voxels']} mask voxels (1/2/3 fibres: {s['voxels_by_fibre_count']['1']}/"
             f"{s['voxels_by_fibre_count']['2']}/{s['voxels_by_fibre_count']['3']}; CSF border "
             f"{s['csf_border_voxels']}), shells b={s['shells']} x {s['dirs_per_shell']} directions + {s['b0s']} b0, "
             f"SNR {s['snr']} (b0, Rician), seed {s['seed']}; simulated in {s['seconds']} s",
             "",
             "| run | wall (s) | peaks: steps (s) | CPU (s) | max RSS (MB) | load before -> after |",
             "|---|---:|---|---:|---:|---|"]
    for name, run in r["runs"].items():
        peaks = run.get("peaks_timings_s")
        steps = f"{peaks['total']:.1f} ({_steps(peaks)})" if peaks else ""
        name = f"{name} (earlier invocation)" if run.get("reused_from_an_earlier_invocation") else name
        lines.append(f"| {name} | {run['wall_s']:.1f} | {steps} | {run['cpu_s']:.1f} | {run['max_rss_mb']} | "
                     f"{run['load_average_before'][0]} -> {run['load_average_after'][0]} |")
    lines += _dice_rows(r["dice"], "whole grid")
    if "dice_inside_brain" in r:
        lines += _dice_rows(r["dice_inside_brain"], "inside the brain mask")
    names = [k for k in next(iter(r["peaks"].values())) if "_vs_" in k]
    lines += ["", "First peak, single-fibre voxels, angle median / p95 (deg):", "",
              "| voxels | n | " + " | ".join(k.replace("_vs_", " vs ") for k in names) + " |",
              "|---|---:|" + "---:|" * len(names)]
    for region, row in r["peaks"].items():
        lines.append(f"| {region.replace('_', ' ')} | {row['voxels']} | "
                     + " | ".join(_angle(row[k]) for k in names) + " |")
    ratios = {k: v for row in r["peaks"].values() for k, v in row.items() if k.startswith("amplitude_ratio")}
    if ratios:
        lines += ["", "Peak amplitude, median ratio (inside masks): " +
                  ", ".join(f"{k[len('amplitude_ratio_'):].replace('_over_', '/')} {v}" for k, v in
                            r["peaks"]["single_fibre_inside_masks"].items() if k.startswith("amplitude_ratio"))]
    if "mrtrix_peaks_vs_upstream" in r:
        u = r["mrtrix_peaks_vs_upstream"]
        lines += ["", f"Our mrtrix peaks vs upstream's peaks.nii.gz: identical {u['identical']}, "
                      f"{u.get('voxels_differing')} voxels differ, max abs difference {u.get('max_abs_difference')}"]
    return "\n".join(lines) + "\n"
