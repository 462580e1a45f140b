"""What a subject run means, typed: :class:`RunOptions`, built from the command line once (``runtime.cli``) or
directly by API callers, and passed as it is to :func:`runtime.subject.run_subject`, the study runner's workers
and the benchmarks. Nothing below the command lines sees an argparse Namespace."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.io.nifti_io import output_paths
from runtime.models.bundles import Model, model_for
from runtime.outputs.segmentation import SaveOptions

if TYPE_CHECKING:
    from runtime.pipeline import TractSegPipeline

STATISTICS_FILE = "statistics.json"
PREVIEW_FILE = "preview.png"


@dataclass(frozen=True)
class RunOptions:
    """Upstream TractSeg's flags and the runtime's own, as one value (the CLI flag of each field in brackets).

    Which bundle and backend: ``artifacts`` [--artifacts], ``output_type``, ``tract_definition``, ``backend``,
    ``device``, ``precision``, ``self_check`` [--no-self-check], ``threads`` [--nr_cpus; None: the backend's
    default]. What is written: ``single_output_file``, ``get_probabilities``, ``postprocess``
    [--no_postprocess], ``statistics``, ``preview``; ``force`` replaces existing outputs; ``quiet``: no progress
    bars. TOM: ``tract_segmentations_path`` [--tract_segmentations_path], the bundle masks' folder (None: upstream's
    default, ``<output>/bundle_segmentations``)."""

    artifacts: str | None = None
    output_type: str = "tract_segmentation"
    tract_definition: str = "TractQuerier+"
    single_output_file: bool = False
    get_probabilities: bool = False
    postprocess: bool = True
    backend: str = "auto"
    device: str = "auto"
    precision: str = "fp32"
    self_check: bool = True
    threads: int | None = None
    statistics: bool = False
    preview: bool = False
    force: bool = False
    quiet: bool = False
    tract_segmentations_path: str | None = None
    raw_diffusion_input: bool = False  # the input is a DWI series: peaks first (runtime.raw_input)
    bvals: str | None = None  # default: <DWI name>.bvals beside it (upstream's)
    bvecs: str | None = None
    brain_mask: str | None = None  # default: nodif_brain_mask.nii.gz beside the DWI, else the engine makes one
    csd_type: str = "csd"
    keep_intermediate_files: bool = False
    peaks_engine: str = "auto"  # auto | mrtrix | dipy
    rescale_dm: bool = False  # dm_regression: upstream's min-max scaling of the whole output (to [0, 1])

    def __post_init__(self) -> None:
        model_for(self.output_type, self.tract_definition)  # ValueError naming what is supported
        for problem in self.problems():
            raise ValueError(problem)
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be None or >= 1, not {self.threads}")

    def problems(self) -> list[str]:
        """Option combinations that upstream refuses or that make no sense for the output type."""
        found = []
        if self.output_type == "TOM" and self.single_output_file:
            found.append("--single_output_file is not supported for TOM (upstream's CLI writes bundle_TOMs.nii.gz "
                         "once per part, each replacing the last)")
        if self.output_type in ("TOM", "dm_regression") and (self.statistics or self.preview):
            found.append(f"--statistics / --preview are for mask outputs, not --output_type {self.output_type}")
        if not self.raw_diffusion_input and any(v is not None for v in (self.bvals, self.bvecs, self.brain_mask)):
            found.append("--bvals / --bvecs / --brain_mask are for --raw_diffusion_input")
        if self.peaks_engine not in ("auto", "mrtrix", "dipy"):
            found.append(f"--peaks-engine {self.peaks_engine!r}: expected auto, mrtrix or dipy")
        if self.rescale_dm and self.output_type != "dm_regression":
            found.append("--rescale_dm is only used with --output_type dm_regression")
        if self.tract_segmentations_path is not None and self.output_type != "TOM":
            found.append("--tract_segmentations_path is only used with --output_type TOM")
        return found

    @property
    def model(self) -> Model:
        return model_for(self.output_type, self.tract_definition)

    @property
    def save(self) -> SaveOptions:
        return SaveOptions(single_file=self.single_output_file, probabilities=self.get_probabilities,
                           postprocess=self.postprocess, rescale_dm=self.rescale_dm)

    def replace(self, **changes: Any) -> RunOptions:
        return dataclasses.replace(self, **changes)

    def output_record(self) -> dict[str, Any]:
        """The options that shape a subject's outputs: written into the run report's ``request``, and compared
        by the study runner's done-records (a rerun with other values redoes the subject)."""
        return {"output_type": self.output_type, "tract_definition": self.tract_definition,
                "single_output_file": self.single_output_file, "get_probabilities": self.get_probabilities,
                "postprocess": self.postprocess, "statistics": self.statistics, "preview": self.preview,
                "precision": self.precision,
                **({"tract_segmentations_path": self.tract_segmentations_path} if self.output_type == "TOM" else {}),
                **({"rescale_dm": self.rescale_dm} if self.output_type == "dm_regression" else {})}

    def pipeline_key(self) -> tuple:
        """What selects an opened pipeline (a process keeps one per key)."""
        return (self.artifacts, self.output_type, self.tract_definition, self.backend, self.device, self.threads,
                self.precision, self.self_check)

    def open_pipeline(self, warn_demo: bool = True) -> TractSegPipeline:
        from runtime.pipeline import TractSegPipeline

        return TractSegPipeline.open(self.artifacts, self.output_type, self.tract_definition, self.backend,
                                     self.device, self.threads, self.precision, self.self_check, warn_demo)

    def output_files(self, outdir: str | os.PathLike[str]) -> list[Path]:
        """Every file a run writes under ``outdir``: upstream's layout, then statistics.json / preview.png, and
        peaks.nii.gz for a raw diffusion input (an engine's brain mask and intermediates join at run time)."""
        root = Path(outdir)
        model = self.model
        files = output_paths(model.task, model.bundles, self.single_output_file, self.get_probabilities, root)
        return files + [root / name for name, on in ((STATISTICS_FILE, self.statistics),
                                                     (PREVIEW_FILE, self.preview),
                                                     ("peaks.nii.gz", self.raw_diffusion_input)) if on]

    def other_layout_files(self, outdir: str | os.PathLike[str]) -> list[Path]:
        """The outputs of the *other* ``single_output_file`` choice: a run that switches layout removes them, so a
        folder never holds both (upstream leaves the old ones)."""
        model = self.model
        return output_paths(model.task, model.bundles, not self.single_output_file, self.get_probabilities,
                            Path(outdir))
