"""The Python API: one pipeline object, opened once, that segments many subjects.

    from runtime import TractSegPipeline
    pipeline = TractSegPipeline.open(artifacts="path/to/bundle")      # verifies the bundle, loads the backend
    seg = pipeline.predict("sub-01/peaks.nii.gz")                       # a path, a nibabel image or (array, affine)
    seg.probabilities.shape                                             # (72, X, Y, Z) float32 on the input grid
    seg.save("sub-01/tractseg_output")                                  # upstream's layout, all or nothing
    report = pipeline.segment("sub-01/peaks.nii.gz", "sub-01/tractseg_output")  # = the command line's run

``predict`` is upstream TractSeg's inference path (``bin/TractSeg``): flip to MNI signs -> crop -> pad + zoom to
the cube -> x/y/z slices through the backend -> mean of the three probability volumes. The thresholds,
post-processing and the way back to the input grid happen on request in :class:`runtime.outputs.segmentation.Segmentation`.
dm_regression: the same, raw outputs (no sigmoid), values < 0.01 written as 0. TOM (``output_type="TOM"``):
``predict`` returns a :class:`runtime.tom.TOMResult` that runs the four part models on the coronal slices one
part at a time, loading one part's model at a time; ``result.tom("CST_left", masks=DIR)`` is (X, Y, Z, 3) float32.
JAX-free, like all of runtime/.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from runtime.checks.input_checks import check_cube_aspect
from runtime.checks.preflight import cap_threads, find_manifest, warn_if_demo
from runtime.errors import BackendError, one_line
from runtime.io.geometry import BBox, crop_to_nonzero, cube_box_read_back, flip, mni_flip_axes, pad_and_zoom_to_cube
from runtime.io.peaks_input import PeaksInput, ReadPeaks, read_peaks
from runtime.models.bundles import Model, model_for
from runtime.models.manifest import Artifact, Manifest
from runtime.network.backends import Backend, choose, open_backend
from runtime.network.dropout import DropoutSampler, OnesMask
from runtime.network.precision import check_host
from runtime.network.precision import self_check as run_self_check
from runtime.network.predict import SliceStats, fused_probabilities
from runtime.options import BackendOptions, InferenceOptions, RunOptions, UncertaintyOptions
from runtime.outputs.postprocess import BUNDLE_SPECIFIC_RULES
from runtime.outputs.segmentation import Placement, Segmentation
from runtime.qc.run_report import artifact_record, backend_record
from runtime.runner import RunReport, segment_subject
from runtime.tom import TOMResult

log = logging.getLogger("tractseg_aot")


class TractSegPipeline:
    """A verified bundle and a loaded backend for one model; :meth:`predict` runs one subject."""

    def __init__(self, model: Model, manifest: Manifest, artifact: Artifact | None, backend: Backend,
                 threads: int | None):
        self.model, self.manifest, self.artifact, self.backend, self.threads = (model, manifest, artifact,
                                                                                backend, threads)
        self.open_seconds = 0.0
        self.self_check: dict[str, Any] = {"skipped": "not run"}
        self.part = 0  # the part model loaded (TOM: parts run one at a time)
        self._open_args: tuple = ()
        self.dropout: Backend | None = None  # the dropout model (--uncertainty), opened on first use
        self.dropout_artifact: Artifact | None = None

    @classmethod
    def open(cls, artifacts: str | os.PathLike[str] | None = None, output_type: str = "tract_segmentation",
             tract_definition: str = "TractQuerier+", backend: str = "auto", device: str = "auto",
             threads: int | None = None, precision: str = "fp32", self_check: bool = True,
             warn_demo: bool = True) -> TractSegPipeline:
        """Resolve and verify the bundle (``artifacts`` dir, else ``$TRACTSEG_AOT_ARTIFACTS``, else
        ``~/.cache/tractseg-aot/<model>``), check every artifact file's sha256, load it on the backend once, and
        run the bundle's self-check batch on it (:mod:`runtime.network.precision`) unless ``self_check=False``.
        ``warn_demo=False``: no warning for demo weights (the study runner says it once for the study).
        ``precision``: fp32 (exact, default), bf16, int8 or fp16, as the bundle offers and the host can run."""
        started = time.perf_counter()
        model = model_for(output_type, tract_definition)
        manifest = find_manifest(artifacts, model)
        if warn_demo:
            warn_if_demo(manifest)
        threads = cap_threads(threads)
        first = manifest.parts[0] if manifest.parts else manifest
        try:
            name, chosen_device = choose(backend, device, first, precision)
        except BackendError:
            check_host(precision, "cuda" if device == "cuda" else "cpu")  # the reason, when it is the host
            raise
        check_host(precision, chosen_device)
        pipeline = cls(model, manifest, None, None, threads)  # type: ignore[arg-type]
        pipeline._open_args = (name, chosen_device, precision, self_check)
        if manifest.parts:
            pipeline.self_check = {}  # one entry per part, as each is loaded
        pipeline._load(0)
        pipeline.open_seconds = round(time.perf_counter() - started, 3)
        return pipeline

    @classmethod
    def open_with(cls, options: RunOptions, warn_demo: bool = True) -> TractSegPipeline:
        """:meth:`open` for a run's options (its model, bundle and :class:`runtime.options.BackendOptions`)."""
        b: BackendOptions = options.backend
        return cls.open(options.artifacts, options.output_type, options.tract_definition, b.backend, b.device, b.threads,
                        b.precision, b.self_check, warn_demo)

    def _load(self, part: int) -> None:
        """Load the bundle's model (TOM: part ``part``), releasing the one loaded before; self-check it."""
        name, device, precision, self_check = self._open_args
        manifest = self.manifest.parts[part] if self.manifest.parts else self.manifest
        self.backend = None  # type: ignore[assignment]  # one part's model in memory at a time
        self.backend = open_backend(name, device, manifest, self.threads, precision)
        self.artifact = manifest.find(name, device, precision=precision)
        assert self.artifact is not None  # open_backend found it
        self.part = part
        checked = run_self_check(self.backend, manifest, self.artifact, name, device) if self_check else \
            {"skipped": "--no-self-check"}
        self.self_check = checked if not self.manifest.parts else {**self.self_check, f"part{part + 1}": checked}

    def _dropout_sampler(self, uncertainty: UncertaintyOptions) -> DropoutSampler:
        """The dropout model (opened and self-checked with dropout off the first time) drawing fresh masks from
        ``uncertainty.seed``: one sampler per subject, so each subject's masks are the same in any run."""
        name, device, precision, self_check = self._open_args
        if self.dropout is None:
            self.dropout = open_backend(name, device, self.manifest, self.threads, precision, dropout=True)
            self.dropout_artifact = self.manifest.find(name, device, precision=precision, dropout=True)
            assert self.dropout_artifact is not None  # open_backend found it
            ones = OnesMask(self.dropout, self.dropout_artifact.mask_shape)
            checked = run_self_check(ones, self.manifest, self.dropout_artifact, name, device) if self_check else \
                {"skipped": "--no-self-check"}
            self.self_check = {**self.self_check, "dropout_model": checked}
        assert self.dropout_artifact is not None
        return DropoutSampler(self.dropout, self.dropout_artifact.mask_shape, uncertainty.samples, uncertainty.seed)

    def part_outputs(self, cube: np.ndarray, part: int, progress: Callable[[int], None] | None = None,
                     source: str = "") -> tuple[np.ndarray, SliceStats]:
        """A TOM part model's raw outputs for the cube, (3 x its bundles, S, S, S) float32 (loads that part)."""
        if self.part != part:
            self._load(part)
        model = self.model.parts[part]
        return self._network(cube, model.n_classes, model.directions, progress, source)

    def _network(self, cube: np.ndarray, n_classes: int, directions: tuple[int, ...],
                 progress: Callable[[int], None] | None, source: str, box: BBox | None = None,
                 whole: tuple[int, ...] = (), network: Backend | None = None) -> tuple[Any, SliceStats]:
        try:
            return fused_probabilities(cube, network or self.backend, self.manifest.batch_size, n_classes, progress,
                                       directions, box, whole)
        except (KeyboardInterrupt, SystemExit):
            raise
        except MemoryError:
            raise BackendError(f"{self.backend.name}: out of memory during inference on {source}") from None
        except Exception as error:
            raise BackendError(f"{self.backend.name} failed during inference: {one_line(error)}") from error

    def describe(self) -> str:
        b = self.backend
        artifact = self.artifact.id if self.artifact else "(in-process model)"
        precision = self.artifact.precision if self.artifact else "fp32"
        return (f"{self.model.name}: {b.name} {b.version} on {b.device} ({b.detail}), {precision}, bundle "
                f"{self.manifest.bundle_id} artifact {artifact}")

    def read(self, peaks: PeaksInput | ReadPeaks) -> ReadPeaks:
        """The input in memory with every input check made (see :mod:`runtime.checks.input_checks`)."""
        return read_peaks(peaks, self.manifest.slice_size, self.model.largest_part.n_classes)

    @property
    def slices_per_subject(self) -> int:
        """Slices one subject runs through the network (progress bars): 3 x S, TOM 4 parts x S."""
        return self.slices_for()

    def slices_for(self, bundles: tuple[str, ...] | None = None, single_orientation: bool = False) -> int:
        """Slices run for ``bundles`` (TOM: only the parts that hold them; None: every bundle)."""
        models = self.model.parts or (self.model,)
        if bundles is not None and self.model.parts:
            models = tuple(m for m in models if set(m.bundles) & set(bundles))
        per_model = [1 if single_orientation else len(m.directions) for m in models]
        return sum(per_model) * self.manifest.slice_size

    def predict(self, peaks: PeaksInput | ReadPeaks, progress: Callable[[int], None] | None = None,
                masks: str | os.PathLike[str] | None = None, bundles: tuple[str, ...] | None = None,
                inference: InferenceOptions = InferenceOptions()) -> Segmentation | TOMResult:
        """Segment one subject; ``progress(n)`` is called as slices complete (:attr:`slices_per_subject` in all).
        TOM: a :class:`runtime.tom.TOMResult` whose parts run when its bundles are asked for (``masks``: the
        bundle segmentations folder its TOMs are masked with; ``bundles``: only these, so only the parts that
        hold them run). ``inference``: ``single_orientation`` runs the y slices only (upstream's
        ``trainer.predict_img``, no mean); ``uncertainty`` gives the dropout std maps in place of probabilities
        (:mod:`runtime.network.dropout`; a Segmentation whose ``uncertainty`` is set). ``super_resolution`` is the
        input's business (:mod:`runtime.runner`), not this method's."""
        if inference.uncertainty is not None and self.model.task != "tract_segmentation":
            raise ValueError(f"uncertainty maps are for tract_segmentation (upstream's {self.model.task} model has "
                             "no dropout layer)")
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        given = self.read(peaks)
        data, affine, source, bbox = given.data, given.affine, given.source, given.bbox
        del given, peaks  # a caller that kept no reference (runtime.runner.run_subject): freed after the cube
        timings["load"] = round(time.perf_counter() - t0, 3)

        t0 = time.perf_counter()
        shape = (int(data.shape[0]), int(data.shape[1]), int(data.shape[2]))
        axes = mni_flip_axes(affine)
        if bbox is None:  # not checked by the runner (runtime.io.peaks_input.check_aspect) yet
            cropped, bbox = crop_to_nonzero(flip(data, axes))
            check_cube_aspect(source, cropped.shape)
        else:
            cropped = flip(data, axes)[tuple(slice(a, b) for a, b in bbox)]
        cube, transform = pad_and_zoom_to_cube(cropped, self.manifest.slice_size)
        del data, cropped
        timings["preprocess"] = round(time.perf_counter() - t0, 3)

        placement = Placement(affine=affine, shape=shape, flip_axes=axes, bbox=bbox, transform=transform)
        if self.model.parts:
            def run_part(part: int) -> tuple[np.ndarray, SliceStats]:
                t1 = time.perf_counter()
                found = self.part_outputs(cube, part, progress, source)
                timings["network"] = round(timings.get("network", 0.0) + time.perf_counter() - t1, 3)
                return found

            wanted = tuple(b for b in self.model.bundles if bundles is None or b in bundles)  # part by part
            return TOMResult(bundles=wanted, part_bundles=tuple(p.bundles for p in self.model.parts),
                             source=source, placement=placement, run_part=run_part,
                             masks=None if masks is None else Path(masks), timings=timings, model=self.model.name)
        t0 = time.perf_counter()
        # only the box that the way back reads, but every voxel of the bundles with a cube-space rule (CA, FX)
        uncertainty = inference.uncertainty
        whole = tuple(i for i, b in enumerate(self.model.bundles) if b in BUNDLE_SPECIFIC_RULES) \
            if self.model.task == "tract_segmentation" and uncertainty is None else ()
        network = self._dropout_sampler(uncertainty) if uncertainty is not None else None
        directions = (1,) if inference.single_orientation else self.model.directions  # upstream: SLICE_DIRECTION y
        fused, stats = self._network(cube, self.model.n_classes, directions, progress, source,
                                     cube_box_read_back(transform, self.manifest.slice_size), whole, network)
        timings["network"] = round(time.perf_counter() - t0, 3)
        return Segmentation(bundles=self.model.bundles, output_type=self.model.task, source=source, fused=fused,
                            placement=placement, slices=stats, timings=timings, model=self.model.name,
                            threshold=self.model.threshold, single_orientation=inference.single_orientation,
                            uncertainty=uncertainty.record() if uncertainty is not None else None)

    def segment(self, peaks: PeaksInput, outdir: str | os.PathLike[str], options: RunOptions | None = None,
                subject: str | None = None, report: str | os.PathLike[str] | None = None) -> RunReport:
        """One subject to files, exactly as ``python -m runtime.run`` writes them: the subject runner
        (:func:`runtime.runner.segment_subject`) with this pipeline. ``options`` (a
        :class:`runtime.options.RunOptions`) must name this pipeline's model; default: upstream's CLI defaults
        for it."""
        options = options or RunOptions(output_type=self.model.task, tract_definition=self.model.tract_definition,
                                        quiet=True)
        if options.model != self.model:
            raise ValueError(f"options ask for {options.model.name}, this pipeline runs {self.model.name}")
        return segment_subject(peaks, outdir, options, lambda: self, self.manifest, report, subject)

    def record(self) -> dict[str, Any]:
        """What ran: the bundle, the verified artifact and the backend (for reports)."""
        return {"model": self.model.name,
                "artifact": artifact_record(self.manifest, self.artifact) if self.artifact else None,
                **({"dropout_artifact": artifact_record(self.manifest, self.dropout_artifact)}
                   if self.dropout_artifact else {}),
                "backend": backend_record(self.backend, self.manifest.batch_size, self.threads),
                "precision": self.artifact.precision if self.artifact else "fp32", "self_check": self.self_check}

