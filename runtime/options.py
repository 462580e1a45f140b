"""What a run is asked to do, typed by concern: each a small frozen value, composed by the callers that need it.

* :class:`BackendOptions`: how the network runs (``--backend``, ``--device``, ``--precision``, ...).
* :class:`SaveOptions`: what is written, in upstream's layout (``--single_output_file``, ...).
* :class:`QCOptions`: the extras beside the outputs (``--statistics``, ``--preview``).
* :class:`RawInputOptions`: a DWI series as input, its peaks made first (``--raw_diffusion_input``, ...).
* :class:`InferenceOptions`: upstream's other ways to run the network (``--single_orientation``,
  ``--super_resolution``, ``--uncertainty``).
* :class:`RunOptions`: one subject's run, the five above plus the model and its bundle, ``force`` and ``quiet``.

The chain (:class:`runtime.chain.ChainOptions`) and the study runner (:class:`runtime.cohort.StudyOptions`)
compose these too; no type holds a field that one of its callers must refuse. Command lines build them once
(:mod:`runtime.cli.options`); nothing below the command lines sees an argparse Namespace.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.io.nifti_io import PEAKS_FILE, PREVIEW_FILE, STATISTICS_FILE, output_paths
from runtime.models.bundles import Model, model_for

PEAKS_ENGINES = ("auto", "mrtrix", "dipy")
ORIENTATION_MODES = ("check", "fix", "off")
CSD_TYPES = ("csd", "csd_msmt", "csd_msmt_5tt")


class _Replace:
    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class BackendOptions(_Replace):
    """How the network runs: ``backend``, ``device``, ``precision``, ``self_check`` [--no-self-check],
    ``threads`` [--nr_cpus; None: the backend's default]."""

    backend: str = "auto"
    device: str = "auto"
    precision: str = "fp32"
    self_check: bool = True
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be None or >= 1, not {self.threads}")


@dataclass(frozen=True)
class SaveOptions(_Replace):
    """What is written (upstream's CLI options): ``single_file`` [--single_output_file], ``probabilities``
    [--get_probabilities], ``postprocess`` [not --no_postprocess], ``rescale_dm`` [--rescale_dm: dm_regression's
    values min-max scaled over the whole output], ``tract_dir`` [--tract_segmentation_output_dir] and ``tom_dir``
    [--TOM_output_dir]: the per-bundle folders' names."""

    single_file: bool = False
    probabilities: bool = False
    postprocess: bool = True
    rescale_dm: bool = False
    tract_dir: str = "bundle_segmentations"
    tom_dir: str = "TOM"

    def __post_init__(self) -> None:
        for flag, name in (("--tract_segmentation_output_dir", self.tract_dir), ("--TOM_output_dir", self.tom_dir)):
            if not name or name in (".", "..") or "/" in name or "\\" in name:
                raise ValueError(f"{flag} {name!r}: a folder name inside the output folder, without '/'")

    def written_for(self, uncertainty: bool) -> SaveOptions:
        """What is really written: ``--uncertainty`` writes float maps without post-processing (upstream's
        ``output_float``, no ``postprocess``)."""
        return self.replace(probabilities=True, postprocess=False) if uncertainty else self

    def folders(self) -> dict[str, str]:
        """The folder names as output_paths takes them."""
        return {"tract_segmentation_dir": self.tract_dir, "tom_dir": self.tom_dir}


@dataclass(frozen=True)
class QCOptions(_Replace):
    """The extras written beside a mask output: ``statistics.json`` and ``preview.png``."""

    statistics: bool = False
    preview: bool = False


@dataclass(frozen=True)
class RawInputOptions(_Replace):
    """The input is a DWI series (upstream's ``--raw_diffusion_input``): its peaks are made first.
    ``bvals`` / ``bvecs`` default to ``<DWI name>.bvals`` / ``.bvecs`` beside it; ``brain_mask`` to
    ``nodif_brain_mask.nii.gz`` beside it, else the engine makes one."""

    bvals: str | None = None
    bvecs: str | None = None
    brain_mask: str | None = None
    csd_type: str = "csd"
    keep_intermediate_files: bool = False
    peaks_engine: str = "auto"  # auto | mrtrix | dipy

    def __post_init__(self) -> None:
        if self.peaks_engine not in PEAKS_ENGINES:
            raise ValueError(f"--peaks-engine {self.peaks_engine!r}: expected auto, mrtrix or dipy")
        if self.csd_type not in CSD_TYPES:
            raise ValueError(f"--csd_type {self.csd_type!r}: expected one of {', '.join(CSD_TYPES)}")

    def record(self) -> dict[str, Any]:
        """What shapes the peaks and the files kept (the done-records compare it: other settings redo the
        subject)."""
        return {"peaks_engine": self.peaks_engine, "csd_type": self.csd_type,
                "keep_intermediate_files": self.keep_intermediate_files,
                **{k: str(Path(v).resolve()) if v else None
                   for k, v in (("bvals", self.bvals), ("bvecs", self.bvecs), ("brain_mask", self.brain_mask))}}


@dataclass(frozen=True)
class PreprocessOptions(_Replace):
    """``--preprocess``: the run in MNI space (upstream's, without FSL). ``template``: ``--mni-template FILE``
    (None: the installed TractSeg's, else the per-user cache's); ``fa``: ``--fa FILE``, an FA map on the peaks'
    grid to register (None: the first-peak length)."""

    template: str | None = None
    fa: str | None = None

    def record(self) -> dict[str, Any]:
        return {"template": self.template, "fa": self.fa}


@dataclass(frozen=True)
class UncertaintyOptions(_Replace):
    """``--uncertainty``: upstream's Monte Carlo dropout (``trainer.predict_img``: 30 passes per slice with the
    bottleneck's dropout on, the per-voxel standard deviation of the probabilities). The dropout masks are drawn
    by numpy from ``seed`` [--seed], so a run is reproducible."""

    samples: int = 30
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples < 2:
            raise ValueError(f"uncertainty samples must be >= 2, not {self.samples}")

    def record(self) -> dict[str, Any]:
        return {"samples": self.samples, "seed": self.seed}


@dataclass(frozen=True)
class InferenceOptions(_Replace):
    """Upstream's other ways to run the network: ``single_orientation`` [--single_orientation: the y slices only,
    no mean of three orientations], ``super_resolution`` [--super_resolution: the input resampled to the model's
    1.25 mm first, and the outputs left there], ``uncertainty`` [--uncertainty: dropout std maps instead of masks;
    None: off]."""

    single_orientation: bool = False
    super_resolution: bool = False
    uncertainty: UncertaintyOptions | None = None

    def record(self) -> dict[str, Any]:
        """Only what is switched on (a default run's record is unchanged)."""
        return {**({"single_orientation": True} if self.single_orientation else {}),
                **({"super_resolution": True} if self.super_resolution else {}),
                **({"uncertainty": self.uncertainty.record()} if self.uncertainty is not None else {})}


@dataclass(frozen=True)
class RunOptions(_Replace):
    """One subject's run: the model (``output_type``, ``tract_definition``) and its bundle (``artifacts``
    [--artifacts]; None: ``$TRACTSEG_AOT_ARTIFACTS``, else the per-user cache), how the network runs (``backend``),
    what is written (``save``, ``qc``), a raw DWI input (``raw``; None: the input is peaks), TOM's bundle masks
    (``tract_segmentations_path``; None: upstream's ``<output>/bundle_segmentations``), ``force`` (replace
    existing outputs), ``quiet`` (no progress bars or info lines), ``inference`` (upstream's other ways to run the
    network: :class:`InferenceOptions`) and ``orientation``: the check for a flipped
    peak axis before the network (``check``: warn, ``fix``: apply the flip, ``off``; :mod:`runtime.runner.orientation`)."""

    output_type: str = "tract_segmentation"
    tract_definition: str = "TractQuerier+"
    artifacts: str | None = None
    backend: BackendOptions = BackendOptions()
    save: SaveOptions = SaveOptions()
    qc: QCOptions = QCOptions()
    raw: RawInputOptions | None = None
    tract_segmentations_path: str | None = None
    tom_bundles: tuple[str, ...] | None = None  # TOM: only these bundles (and the part models that hold them)
    preprocess: PreprocessOptions | None = None  # --preprocess: the run in MNI space (runtime.runner.preprocess)
    force: bool = False
    quiet: bool = False
    orientation: str = "check"
    inference: InferenceOptions = InferenceOptions()

    def __post_init__(self) -> None:
        model_for(self.output_type, self.tract_definition)  # ValueError naming what is supported
        if self.orientation not in ORIENTATION_MODES:
            raise ValueError(f"--orientation {self.orientation!r}: expected check, fix or off")
        for problem in self.problems():
            raise ValueError(problem)

    def problems(self) -> list[str]:
        """Option combinations that upstream refuses or that make no sense for the output type."""
        found = []
        if self.output_type == "TOM" and self.save.single_file:
            found.append("--single_output_file is not supported for TOM (upstream's CLI writes bundle_TOMs.nii.gz "
                         "once per part, each replacing the last)")
        if self.output_type in ("TOM", "dm_regression") and (self.qc.statistics or self.qc.preview):
            found.append(f"--statistics / --preview are for mask outputs, not --output_type {self.output_type}")
        if self.save.rescale_dm and self.output_type != "dm_regression":
            found.append("--rescale_dm is only used with --output_type dm_regression")
        if self.tract_segmentations_path is not None and self.output_type != "TOM":
            found.append("--tract_segmentations_path is only used with --output_type TOM")
        if self.preprocess is not None and self.output_type == "TOM":
            found.append("--preprocess is not supported for --output_type TOM yet (its bundle masks would have to "
                         "move to MNI space too): run TOM on peaks already in MNI space")
        found += self._inference_problems()
        if self.tom_bundles is not None:
            unknown = [b for b in self.tom_bundles if b not in self.model.bundles]
            if self.output_type != "TOM" or unknown or not self.tom_bundles:
                found.append(f"tom_bundles: a non-empty subset of the TOM model's bundles for --output_type TOM "
                             f"({unknown[0] if unknown else self.output_type})")
        return found

    def _inference_problems(self) -> list[str]:
        found = []
        if self.inference.uncertainty is not None:
            if self.output_type != "tract_segmentation":
                found.append(f"--uncertainty is for --output_type tract_segmentation, not {self.output_type} "
                             "(upstream's other models have no dropout layer: their uncertainty maps would be all zero)")
            if self.qc.statistics or self.qc.preview:
                found.append("--statistics / --preview describe masks; --uncertainty writes uncertainty maps instead")
        if self.inference.super_resolution and self.preprocess is not None:
            found.append("--super_resolution with --preprocess: the outputs go back to the input's grid anyway "
                         "(upstream's do too); leave out one of them")
        return found

    @property
    def uncertainty(self) -> bool:
        return self.inference.uncertainty is not None

    @property
    def written(self) -> SaveOptions:
        """The save options in effect (:meth:`SaveOptions.written_for`)."""
        return self.save.written_for(self.uncertainty)

    @property
    def model(self) -> Model:
        return model_for(self.output_type, self.tract_definition)

    def pipeline_key(self) -> tuple:
        """What selects an opened pipeline (a process keeps one per key): the model, its bundle, the backend."""
        return (self.output_type, self.tract_definition, self.artifacts, self.backend)

    def output_record(self) -> dict[str, Any]:
        """The options that shape a subject's outputs: written into the run report's ``request``, and compared
        by the study runner's done-records (a rerun with other values redoes the subject)."""
        return {"output_type": self.output_type, "tract_definition": self.tract_definition,
                "single_output_file": self.save.single_file, "get_probabilities": self.save.probabilities,
                "postprocess": self.save.postprocess, "statistics": self.qc.statistics, "preview": self.qc.preview,
                "precision": self.backend.precision,
                **({"tract_segmentations_path": self.tract_segmentations_path} if self.output_type == "TOM" else {}),
                **({"tom_bundles": list(self.tom_bundles)} if self.tom_bundles is not None else {}),
                **({"rescale_dm": self.save.rescale_dm} if self.output_type == "dm_regression" else {}),
                **{flag: name for flag, name, default in (("tract_segmentation_output_dir", self.save.tract_dir,
                                                           "bundle_segmentations"),
                                                          ("TOM_output_dir", self.save.tom_dir, "TOM"))
                   if name != default},
                **({"raw_diffusion_input": self.raw.record()} if self.raw is not None else {}),
                **({"preprocess": self.preprocess.record()} if self.preprocess is not None else {}),
                **({"orientation": "fix"} if self.orientation == "fix" else {}),  # check / off change no output
                **self.inference.record()}

    def output_files(self, outdir: str | os.PathLike[str]) -> list[Path]:
        """Every file a run writes under ``outdir``: upstream's layout, then statistics.json / preview.png, and
        peaks.nii.gz for a raw diffusion input (an engine's brain mask and intermediates join at run time)."""
        root = Path(outdir)
        model = self.model
        files = output_paths(model.task, self.tom_bundles or model.bundles, self.save.single_file,
                             self.save.probabilities, root, uncertainty=self.uncertainty, **self.save.folders())
        return files + [root / name for name, on in ((STATISTICS_FILE, self.qc.statistics),
                                                     (PREVIEW_FILE, self.qc.preview),
                                                     (PEAKS_FILE, self.raw is not None)) if on]

    def other_layout_files(self, outdir: str | os.PathLike[str]) -> list[Path]:
        """The outputs of the *other* ``single_output_file`` choice: a run that switches layout removes them, so a
        folder never holds both (upstream leaves the old ones)."""
        model = self.model
        return output_paths(model.task, model.bundles, not self.save.single_file, self.save.probabilities,
                            Path(outdir), uncertainty=self.uncertainty, **self.save.folders())
