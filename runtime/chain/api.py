"""The whole chain on one subject: :func:`check_chain` (every cheap check, before any network runs), then
:func:`run_chain` (tract_segmentation -> endings_segmentation -> TOM on the masks just written -> tracking ->
tractometry), each step being the existing function its own command runs:

| step                    | runs                                                                          |
|-------------------------|-------------------------------------------------------------------------------|
| the three networks      | :func:`runtime.runner.read_subject` + :func:`runtime.runner.run_subject`      |
| tracking                | :func:`runtime.tracking.api.track_output_folder`                              |
| tractometry             | :func:`runtime.tractometry.table.tractometry` -> ``TractometryTable.write_csv`` |

Outputs in upstream's layout under OUT: ``bundle_segmentations/``, ``endings_segmentations/``, ``TOM/``,
``TOM_trackings/`` and ``Tractometry.csv``. Each step commits its own outputs (all or nothing per step); a bad
input found by :func:`check_chain` writes nothing at all.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib

from runtime.chain.options import STEP_TASKS, TRACTOMETRY_CSV, ChainOptions
from runtime.chain.resume import STEPS, ChainRecord, identity
from runtime.checks.preflight import check_outputs, find_manifest
from runtime.errors import ArtifactError, InputError
from runtime.host import peak_rss_mb, require_dipy
from runtime.io.peaks_input import check_input_path, subject_name
from runtime.models.bundles import model_for
from runtime.models.manifest import Manifest
from runtime.options import RunOptions
from runtime.pipeline import TractSegPipeline
from runtime.qc.collectors import preview_dependency_check
from runtime.runner import read_subject, run_subject
from runtime.tracking.api import TRACKING_FOLDER, track_output_folder
from runtime.tracking.api import check_options as check_tracking_options
from runtime.tracking.api import output_files as tracking_outputs
from runtime.tracking.prepare import check_grid
from runtime.tractometry.table import TRACTOMETRY_BUNDLES, tractometry

log = logging.getLogger("tractseg_aot")
NO_SCALAR = "no scalar map given: the chain stops after tracking (no {csv}); give a scalar map (e.g. FA) for it"


@dataclass(frozen=True)
class ChainPlan:
    """A chain checked and ready: the inputs, each step's options and manifest, what tracking and tractometry do."""

    peaks: Path
    outdir: Path
    scalar: Path | None
    options: ChainOptions
    steps: tuple[tuple[RunOptions, Manifest], ...]
    profiled: tuple[str, ...]  # the tracked bundles that upstream's Tractometry profiles, in its order
    record: ChainRecord | None = None  # what an earlier run of this chain finished (runtime.chain.resume)
    skipped: tuple[str, ...] = ()  # steps done earlier with the same inputs and options
    step_records: dict[str, dict[str, Any]] | None = None  # each step's options, as the record keeps them

    @property
    def bundle_id(self) -> str:
        """The three bundles' ids, joined (the study runner's done-records compare it)."""
        return "+".join(manifest.bundle_id for _, manifest in self.steps)


@dataclass(frozen=True)
class ChainReport:
    """What a chain run did (the same fields as :class:`runtime.runner.RunReport`, so the study runner records
    either), plus the tractometry CSV (None without a scalar map)."""

    outputs: tuple[Path, ...]
    timings_s: dict[str, float]
    slices_run: int | None
    peak_rss_mb: float
    document: dict[str, Any]
    csv: Path | None


def bundle_manifests(options: ChainOptions) -> tuple[tuple[RunOptions, Manifest], ...]:
    """Each step's options and its bundle's manifest, checked to be the step's model (one line otherwise)."""
    steps = []
    for task, flag in zip(STEP_TASKS, ("--tract-artifacts", "--endings-artifacts", "--tom-artifacts")):
        step = options.step_options(task)
        try:
            steps.append((step, find_manifest(step.artifacts, model_for(task))))
        except ArtifactError as error:  # the chain's own flags in the hint
            raise ArtifactError(str(error).replace("pass --artifacts DIR", f"pass {flag} DIR or --artifacts-root "
                                                                           "DIR")) from None
    return tuple(steps)


def check_scalar(scalar: Path, peaks: Path) -> None:
    """The scalar map exists, is a readable 3D NIfTI and lies on the peaks' grid (headers only)."""
    if not scalar.is_file():
        raise InputError(f"{scalar}: scalar map not found")
    try:
        image, reference = nib.load(str(scalar)), nib.load(str(peaks))
    except Exception as error:  # nibabel raises many types for a damaged file
        raise InputError(f"{scalar}: not a readable NIfTI image ({type(error).__name__})") from None
    if len(image.shape) != 3:
        raise InputError(f"{scalar}: expected a 3D scalar map, got shape {image.shape}")
    check_grid(image, scalar, reference.shape[:3], reference.affine, peaks)


def planned_outputs(plan_steps: tuple[tuple[RunOptions, Manifest], ...], outdir: Path, options: ChainOptions,
                    with_csv: bool) -> dict[str, list[Path]]:
    """Every file each step writes under ``outdir`` (the three networks', the tractograms and sidecars, the
    CSV)."""
    files = {step.output_type: step.output_files(outdir) for step, _ in plan_steps}
    files["tracking"] = tracking_outputs(outdir / TRACKING_FOLDER, options.bundles, options.tracking.tracking_format)
    files["tractometry"] = [outdir / TRACTOMETRY_CSV] if with_csv else []
    return files


def step_records(steps: tuple[tuple[RunOptions, Manifest], ...], options: ChainOptions, scalar: Path | None,
                 profiled: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """What each step's outputs depend on besides the earlier steps' outputs (the resume record compares it)."""
    records: dict[str, dict[str, Any]] = {step.output_type: {**step.output_record(), "bundle_id": m.bundle_id}
                                          for step, m in steps}
    chain = options.output_record()["chain"]
    records["tracking"] = {k: chain[k] for k in ("bundles", "nr_fibers", "tracking_dilation", "tracking_format",
                                                 "seed")}
    records["tractometry"] = {"nr_points": options.nr_points, "profiled": list(profiled),
                              "scalar": identity(scalar)}
    return records


def check_chain(peaks: str | os.PathLike[str], outdir: str | os.PathLike[str],
                scalar: str | os.PathLike[str] | None, options: ChainOptions) -> ChainPlan:
    """Every check the chain can make before a network runs, cheap ones first: the tracking extra, the peaks
    path, the three bundles, the scalar map (readable, 3D, the peaks' grid), the bundle list, and that no output
    exists (unless ``force``) and none is an input. Raises TractSegError (one line)."""
    require_dipy()
    check_tracking_options(options.tracking)  # trx-python for trx, the values: before any network
    check_input_path(peaks)
    peaks, outdir = Path(peaks), Path(outdir)
    steps = bundle_manifests(options)
    scalar = Path(scalar) if scalar is not None else None
    if scalar is not None:
        check_scalar(scalar, peaks)
    profiled = tuple(b for b in TRACTOMETRY_BUNDLES if b in options.bundles)
    if scalar is not None and not profiled:
        raise InputError(f"--bundles: none of {','.join(options.bundles)} is profiled by upstream's Tractometry "
                         f"(it leaves out CA, CC, MLF, FX and the T_/ST_ bundles of PREF, PREC, POSTC, PAR, OCC)")
    records = step_records(steps, options, scalar, profiled)
    record = ChainRecord(outdir, {"peaks": identity(peaks)}, ignore=options.force)
    skipped: list[str] = []
    for name in STEPS:  # the steps done earlier, as long as every step before them is skipped too
        if name == "tractometry" and scalar is None or record.state(name, records[name]) != "done":
            break
        skipped.append(name)
    files = planned_outputs(steps, outdir, options, scalar is not None)
    inputs = [peaks] + ([scalar] if scalar is not None else [])
    run = [name for name in files if name not in skipped]
    check_outputs([f for name in run if not record.known(name) for f in files[name]], options.force, inputs=inputs)
    check_outputs([f for name in run if record.known(name) for f in files[name]], True, inputs=inputs)
    preview_dependency_check(options.qc.preview)
    return ChainPlan(peaks, outdir, scalar, options, steps, profiled, record, tuple(skipped), records)


def _progress(options: ChainOptions):
    if options.quiet:
        return None
    from tqdm import tqdm

    return tqdm


def run_chain(peaks: str | os.PathLike[str], outdir: str | os.PathLike[str],
              scalar: str | os.PathLike[str] | None = None, options: ChainOptions = ChainOptions(),
              open_pipeline: Callable[[RunOptions], Any] | None = None, subject: str | None = None,
              plan: ChainPlan | None = None) -> ChainReport:
    """Run the chain on one subject into ``outdir`` (upstream's layout, see the module docstring); returns a
    :class:`ChainReport`. ``open_pipeline(step_options)`` opens a step's pipeline (default: a fresh one each;
    the study runner passes its per-process cache). Without ``scalar`` the chain stops after tracking."""
    started = time.perf_counter()
    plan = plan or check_chain(peaks, outdir, scalar, options)
    opener = open_pipeline or TractSegPipeline.open_with
    name = subject or subject_name(plan.peaks)
    outputs: list[Path] = []
    timings: dict[str, float] = {}
    documents: dict[str, Any] = {}
    slices = 0
    record, records = plan.record or ChainRecord(plan.outdir, {}, ignore=True), plan.step_records or {}

    def skip(index: int, step_name: str) -> bool:
        if step_name not in plan.skipped:
            record.mark(step_name, records.get(step_name, {}), "started")
            return False
        log.info("step %d/5: %s: done earlier with the same inputs and options, kept", index, step_name)
        outputs.extend(plan.outdir / p for p in record.steps[step_name]["outputs"])
        return True

    for index, (step, manifest) in enumerate(plan.steps, 1):
        if skip(index, step.output_type):
            continue
        log.info("step %d/5: %s", index, step.output_type)
        step = step.replace(force=True) if record.known(step.output_type) else step  # this chain's own outputs
        # the outputs' locations were checked by check_chain; TOM reads the masks just written
        checked = read_subject(plan.peaks, plan.outdir, step.output_files(plan.outdir), step, manifest)
        report = run_subject(opener(step), checked, step, name)
        record.mark(step.output_type, records.get(step.output_type, {}), "done", list(report.outputs))
        outputs += report.outputs
        timings[step.output_type] = report.timings_s["total"]
        slices += report.slices_run or 0
        documents[step.output_type] = report.document
    if not skip(4, "tracking"):
        log.info("step 4/5: tracking %d bundle(s), %d streamlines each", len(plan.options.bundles),
                 plan.options.tracking.nr_fibers)
        t0 = time.perf_counter()
        tractograms = track_output_folder(plan.outdir, plan.options.bundles, plan.options.tracking,
                                          progress=_progress(plan.options),
                                          nr_cpus=plan.options.backend.threads or -1)
        written = [p for t in tractograms for p in (t, t.with_name(t.name + ".json"))]
        record.mark("tracking", records.get("tracking", {}), "done", written)
        outputs += written
        timings["tracking"] = round(time.perf_counter() - t0, 3)
    csv = None
    if plan.scalar is None:
        log.info("%s", NO_SCALAR.format(csv=TRACTOMETRY_CSV))
    elif skip(5, "tractometry"):
        csv = plan.outdir / TRACTOMETRY_CSV
    else:
        log.info("step 5/5: tractometry of %d bundle(s) on %s", len(plan.profiled), plan.scalar)
        t0 = time.perf_counter()
        table = tractometry(plan.outdir / TRACKING_FOLDER, plan.outdir / "endings_segmentations", plan.scalar,
                            plan.options.nr_points, plan.options.tracking.tracking_format, plan.profiled,
                            progress=_progress(plan.options))
        csv = table.write_csv(plan.outdir / TRACTOMETRY_CSV)
        record.mark("tractometry", records.get("tractometry", {}), "done", [csv])
        outputs.append(csv)
        timings["tractometry"] = round(time.perf_counter() - t0, 3)
    timings["total"] = round(time.perf_counter() - started, 3)
    rss = peak_rss_mb()
    document = {"steps": documents, "tracking": plan.options.output_record()["chain"],
                "scalar": str(plan.scalar) if plan.scalar else None, "timings_s": timings, "peak_rss_mb": rss,
                "bundle_id": plan.bundle_id}
    return ChainReport(tuple(outputs), timings, slices, rss, document, csv)
