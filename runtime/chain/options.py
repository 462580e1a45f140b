"""What a chain run means, typed: :class:`ChainOptions`, and where its three bundles are found.

The bundles are located as ``runtime.run`` locates one (:func:`runtime.checks.preflight.resolve_bundle_dir`),
per model: the model's own option (``tract_artifacts`` / ``endings_artifacts`` / ``tom_artifacts``), else
``artifacts_root/<model name>`` (``tract_segmentation``, ``endings_segmentation``, ``TOM``: the names
``python -m export`` gives them under ``$TRACTSEG_AOT_ARTIFACTS``), else ``$TRACTSEG_AOT_ARTIFACTS/<model name>``,
else the per-user cache's ``<model name>``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.checks.preflight import resolve_bundle_dir
from runtime.models.bundles import TRACTQUERIER_BUNDLES, model_for
from runtime.options import BackendOptions, QCOptions, RunOptions, SaveOptions
from runtime.tracking.api import TrackingOptions
from runtime.tracking.writers import FORMATS
from runtime.tractometry.table import TRACTOMETRY_CSV  # noqa: F401 (the chain's CSV name, exported here)

STEP_TASKS = ("tract_segmentation", "endings_segmentation", "TOM")


@dataclass(frozen=True)
class ChainOptions:
    """The chain's options. ``backend``: how the three networks run; ``qc``: the tract step's extras;
    ``postprocess``: the tract step's blob removal; ``force`` / ``quiet``. The three bundles: see the module
    docstring. ``bundles``: the bundles tracked (and profiled, those among upstream's tractometry bundles); the
    segmentation steps write all 72 as upstream. ``scalar_pattern``: the study runner's way to find each
    subject's scalar map (:mod:`runtime.cohort.chain_subject`)."""

    backend: BackendOptions = BackendOptions()
    qc: QCOptions = QCOptions()
    postprocess: bool = True
    force: bool = False
    quiet: bool = True
    orientation: str = "check"  # checked on the tract step; "fix" fixes the peaks for every step
    tract_artifacts: str | None = None
    endings_artifacts: str | None = None
    tom_artifacts: str | None = None
    artifacts_root: str | None = None
    bundles: tuple[str, ...] = TRACTQUERIER_BUNDLES
    tracking: TrackingOptions = TrackingOptions()
    nr_points: int = 100
    scalar_pattern: str | None = None

    def __post_init__(self) -> None:
        for problem in self.problems():
            raise ValueError(problem)

    def problems(self) -> list[str]:
        """What the chain cannot run with (one line each)."""
        found = []
        unknown = [b for b in self.bundles if b not in TRACTQUERIER_BUNDLES]
        if unknown or not self.bundles:
            found.append(f"--bundles: invalid bundle name: {unknown[0] if unknown else '(none)'}")
        if self.tracking.tracking_format not in FORMATS:
            found.append(f"--tracking_format: {self.tracking.tracking_format!r} is not one of {', '.join(FORMATS)}")
        if self.tracking.nr_fibers < 1 or self.tracking.dilation < 0:
            found.append("--nr_fibers must be >= 1 and --tracking_dilation >= 0")
        if self.nr_points < 3:
            found.append(f"--nr_points: must be at least 3, got {self.nr_points}")
        return found

    def replace(self, **changes: Any) -> ChainOptions:
        return dataclasses.replace(self, **changes)

    def bundle_dir(self, task: str) -> Path:
        """Where the bundle of ``task`` (one of :data:`STEP_TASKS`) is looked for (module docstring)."""
        model = model_for(task)
        own = {"tract_segmentation": self.tract_artifacts, "endings_segmentation": self.endings_artifacts,
               "TOM": self.tom_artifacts}[task]
        if own is None and self.artifacts_root is not None:
            return Path(self.artifacts_root) / model.name
        return resolve_bundle_dir(own, model)

    def step_options(self, task: str) -> RunOptions:
        """The RunOptions of one segmentation step (its own bundle; statistics and preview on the tract step; TOM:
        only the tracked bundles' TOMs, so only the part models that hold them run)."""
        tract = task == "tract_segmentation"
        tom = tuple(b for b in TRACTQUERIER_BUNDLES if b in self.bundles) \
            if task == "TOM" and set(self.bundles) != set(TRACTQUERIER_BUNDLES) else None
        return RunOptions(output_type=task, artifacts=str(self.bundle_dir(task)), backend=self.backend,
                          save=SaveOptions(postprocess=self.postprocess), qc=self.qc if tract else QCOptions(),
                          tom_bundles=tom, force=self.force, quiet=self.quiet,
                          orientation=self.orientation if tract or self.orientation == "fix" else "off")

    def output_record(self) -> dict[str, Any]:
        """What shapes a chain's outputs (the study runner's done-records compare it)."""
        return {**self.step_options("tract_segmentation").output_record(), "chain": {
            "bundles": list(self.bundles), "nr_fibers": self.tracking.nr_fibers,
            "tracking_dilation": self.tracking.dilation, "tracking_format": self.tracking.tracking_format,
            "seed": self.tracking.seed, "nr_points": self.nr_points, "scalar_pattern": self.scalar_pattern}}
