"""The outputs of a run: results.json (every figure), results.md (tables), results.png (latency and drift),
and with --publish their copies under benchmarks/results/ plus the table in benchmarks/README.md."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from runtime.network.backends import BACKENDS

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1000 * seconds:,.0f}"


def _sci(value: float | None) -> str:
    return "-" if value is None else ("0" if value == 0 else f"{value:.1e}")


def latency_table(result: dict[str, Any]) -> list[str]:
    live = next((r for r in result["rows"] if r["id"].startswith("live-jax") and r.get("latency")), None)
    base = live["latency"]["median_s"] if live else None
    lines = ["| row (artifact / backend / device) | precision | batch ms median (min-max) | ms/slice | GFLOP/s |"
             " speed vs JAX | max abs | mean abs | mask diff | gate |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        if row.get("skipped"):
            lines.append(f"| {row['id']} | {row['precision']} | skipped: {row['skipped']} | | | | | | | |")
            continue
        lat, drift = row["latency"], row.get("drift") or {}
        speed = f"{base / lat['median_s']:.2f}x" if base else "-"
        note = " *" if lat.get("note") else ""
        gate = ("ref" if row["kind"] == "reference" else
                ("ok" if row["id"] not in result["gate"]["failing_rows"] else "FAIL")
                if row["precision"] == "fp32" else "n/a")
        mask = _sci(drift.get("mask_diff_fraction"))
        lines.append(f"| {_label(row)} | {row['precision']} | {_ms(lat['median_s'])} "
                     f"({_ms(lat['min_s'])}-{_ms(lat['max_s'])}){note} | {lat['ms_per_slice']:.0f} | "
                     f"{lat['gflops']:.0f} | {speed} | "
                     f"{_sci(drift.get('max_abs'))} | {_sci(drift.get('mean_abs'))} | {mask} | {gate} |")
    return lines


def subject_table(subject: dict[str, Any], gmac_per_slice: float) -> list[str]:
    lines = ["| run | wall s | network s | other s | slices run / skipped | network GFLOP/s | Dice min (bundle) |"
             " Dice mean | voxel diff | load before | how |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, run in subject["runs"].items():
        if run.get("error"):
            lines.append(f"| {name} | failed: {run['error'][:120]} | | | | | | | | | |")
            continue
        stages = run.get("stages_s", {})
        network = run.get("network_s", stages.get("network"))
        other = None if network is None else run["wall_s"] - network
        slices = run.get("slices") or {}
        agree = run.get("agreement") or {}
        how = "EXTRAPOLATED, not measured" if run.get("extrapolated") else run.get("how", "runtime.run CLI")
        rate = f"{2 * gmac_per_slice * slices['run'] / network:.0f}" if network and slices.get("run") else "-"
        lines.append(
            f"| {name} | {run['wall_s']:.1f} | {'-' if network is None else f'{network:.1f}'} | "
            f"{'-' if other is None else f'{other:.1f}'} | "
            f"{slices.get('run', '-')} / {slices.get('skipped', '-')} | {rate} | "
            + (f"{agree['dice_min']:.5f} ({agree['dice_min_bundle']}) | {agree['dice_mean']:.6f} | "
               f"{_sci(agree['voxel_diff_fraction'])} |" if agree else "- | - | - |")
            + f" {(run.get('load_average_before') or ['-'])[0]} | {how} |")
    return lines


def markdown(result: dict[str, Any]) -> str:
    m, b = result["machine"], result["bundle"]
    lines = [f"**{result['mode']}** benchmark, {result['started']}, {result['wall_s']:.0f} s. "
             f"{m['cpu_model']}, {m['usable_cpus']} CPUs, {m['ram_gib']} GiB, flags {' '.join(m['cpu_flags'])}; "
             f"load average at start {m['load_average_at_start']}.",
             f"Bundle {b['bundle_id']} ({b['task']}, C={b['n_classes']}, S={b['slice_size']}, "
             f"B={b['batch_size']}, {b['weights']['source']}). "
             f"{result['gmac_per_slice']:.2f} GMAC per slice; drift is against the live JAX model on "
             f"{result['check_slices']} check slices; gate: fp32 artifacts max abs <= {result['gate']['tolerance']:g}"
             f" -> **{'PASS' if result['gate']['passed'] else 'FAIL'}**.", "", *latency_table(result), ""]
    lines.append("(alt): an artifact the runtime does not pick on this CPU. *: one call, no warm-up (slow row). "
                 "speed vs JAX: live JAX median / row median. mask diff: fraction of (slice, bundle, pixel) whose "
                 "prob > 0.5 differs from the live model's.")
    if result.get("upstream_vs_live"):
        u = result["upstream_vs_live"]
        lines.append(f"Live JAX model vs upstream PyTorch: max abs {_sci(u['max_abs'])}, mean abs "
                     f"{_sci(u['mean_abs'])}, mask diff {_sci(u['mask_diff_fraction'])}.")
    if result.get("subject"):
        s = result["subject"]
        lines += ["", f"Full subject: {s['input']['shape']} synthetic peaks (export.demo_input, seed "
                  f"{s['input']['seed']}); Dice per bundle of the final masks against the live JAX model's masks "
                  "(same runtime pipeline, in-process). voxel diff: fraction of (voxel, bundle) whose final mask "
                  "differs. load before: 1-min load average as the run started (it includes the benchmark's own "
                  "previous step; 2 = both cores busy).", "",
                  *subject_table(s, result["gmac_per_slice"])]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (matplotlib.ticker.FuncFormatter)

    rows = [r for r in result["rows"] if not r.get("skipped")]
    subject = result.get("subject")
    fig, axes = plt.subplots(1, 3 if subject else 2, figsize=(19 if subject else 13, 0.42 * len(rows) + 2.6))
    y = list(range(len(rows)))
    names = [_label(r) for r in rows]
    grey = ["tab:grey" if r["kind"] == "reference" else None for r in rows]
    per_slice = [{k: 1000 * r["latency"][f"{k}_s"] / r["latency"]["batch_size"] for k in ("median", "min", "max")}
                 for r in rows]
    med = [p["median"] for p in per_slice]
    lo = [max(0.0, p["median"] - p["min"]) for p in per_slice]
    hi = [max(0.0, p["max"] - p["median"]) for p in per_slice]
    ax = axes[0]
    ax.barh(y, med, xerr=[lo, hi], color=[g or "tab:blue" for g in grey], capsize=3)
    for i, (m, r) in enumerate(zip(med, rows)):
        ax.text(m + hi[i], i, f"  {m:.0f} ms, {r['latency']['gflops']:.0f} GFLOP/s", va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(min(med) / 2, max(m + h for m, h in zip(med, hi)) * 8)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("ms per slice, log scale (median batch call / batch size; whiskers: min-max)")
    ax.set_title(f"Latency at batch {result['bundle']['batch_size']} (grey: reference rows)")
    ax = axes[1]
    floor = 1e-9
    for i, r in enumerate(rows):
        drift = r.get("drift") or {}
        if drift.get("max_abs") is None:
            ax.text(floor, i, "  reference", va="center", fontsize=8)
            continue
        ax.barh(i, max(drift["max_abs"], floor), color=grey[i] or "tab:orange")
        ax.plot(max(drift["mean_abs"], floor), i, "k|", ms=12)
        ax.text(max(drift["max_abs"], floor), i, f"  {_sci(drift['max_abs'])}", va="center", fontsize=8)
    ax.plot([], [], "k|", ms=12, label="mean abs")
    ax.axvline(result["gate"]["tolerance"], color="red", ls="--", label=f"gate {result['gate']['tolerance']:g}")
    ax.set_xscale("log")
    ax.set_xlim(floor, 1e-3)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("max abs probability difference vs live JAX (log; 0 at 1e-9)")
    ax.set_title("Drift on the check slices")
    ax.legend(loc="upper right", fontsize=8)
    if subject:
        ax = axes[2]
        runs = [(n, r) for n, r in subject["runs"].items() if not r.get("error")]
        net = [r.get("network_s", r.get("stages_s", {}).get("network", 0.0)) for _, r in runs]
        for i, ((name, r), n) in enumerate(zip(runs, net)):
            hatch = "//" if r.get("extrapolated") else ""
            ax.barh(i, n, color="tab:blue", hatch=hatch, label="network" if i == 0 else None)
            ax.barh(i, r["wall_s"] - n, left=n, color="tab:green", hatch=hatch,
                    label="everything else" if i == 0 else None)
            ax.text(r["wall_s"], i, f"  {r['wall_s']:.0f} s" + (" EXTRAPOLATED" if hatch else ""), va="center",
                    fontsize=8)
        ax.set_yticks(range(len(runs)), [n for n, _ in runs])
        ax.set_xlim(0, max(r["wall_s"] for _, r in runs) * 1.6)
        ax.invert_yaxis()
        ax.set_xlabel("seconds for one subject (wall, incl. process start)")
        ax.set_title("Full subject (hatched = extrapolated)")
        ax.legend(loc="upper right", fontsize=8)
    fig.suptitle(f"{result['machine']['cpu_model']}, {result['machine']['usable_cpus']} CPUs - {result['mode']} "
                 f"benchmark {result['started']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _label(row: dict[str, Any]) -> str:
    alternate = row["kind"] == "artifact" and row["backend"] in BACKENDS and not row["selected_by_runtime"]
    return row["id"] + (" (alt)" if alternate else "")


def write_all(result: dict[str, Any], outdir: Path) -> dict[str, Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {"json": outdir / "results.json", "md": outdir / "results.md", "png": outdir / "results.png"}
    paths["json"].write_text(json.dumps(result, indent=1, default=str) + "\n")
    paths["md"].write_text(markdown(result))
    plot(result, paths["png"])
    return paths


def write_json_md(result: dict[str, Any], text: str, outdir: Path) -> dict[str, Path]:
    """results.json (every figure) and results.md (``text``) under ``outdir``; for benchmarks without a plot."""
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {"json": outdir / "results.json", "md": outdir / "results.md"}
    paths["json"].write_text(json.dumps(result, indent=1, default=str) + "\n")
    paths["md"].write_text(text)
    return paths


def publish(paths: dict[str, Path], kind: str, readme: Path = HERE / "README.md",
            results: Path = HERE / "results") -> dict[str, Path]:
    """Copy to benchmarks/results/<machine kind>.{json,md,png} and put the table in the README."""
    results.mkdir(parents=True, exist_ok=True)
    copied = {k: shutil.copyfile(p, results / f"{kind}{p.suffix}") for k, p in paths.items()}
    text = readme.read_text()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        block = (f"{BEGIN}\nLatest published run ({kind}; files in `benchmarks/results/`):\n\n"
                 f"{paths['md'].read_text()}\n![latency and drift](results/{kind}.png)\n{END}")
        readme.write_text(head + block + tail)
    return {k: Path(v) for k, v in copied.items()}
