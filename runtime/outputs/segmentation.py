"""The result of one prediction: the fused cube-space probabilities and how to map them back to the input grid.

Only the fused cube ``(C, S, S, S)`` float32 is held; every input-grid array is made on request, one bundle at a
time (:meth:`Segmentation.probability`, :meth:`Segmentation.mask`) or stacked (:attr:`Segmentation.probabilities`,
:meth:`Segmentation.masks`). :meth:`Segmentation.save` writes upstream's layout all-or-nothing
(:mod:`runtime.outputs.output_set`).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime.io.geometry import BBox, Transform
from runtime.io.nifti_io import output_bytes, output_paths, strip_nifti
from runtime.options import SaveOptions
from runtime.outputs.output_set import StagedOutputs
from runtime.outputs.save import save_segmentation
from runtime.outputs.writers import OutputSpec, bundle_volume, value_range, write_outputs
from runtime.network.fused_cube import FusedCube
from runtime.network.predict import SliceStats

log = logging.getLogger("tractseg_aot")
BundleHook = Callable[[int, str, np.ndarray], None]  # (index, name, written volume on the input grid)


@dataclass(frozen=True)
class Placement:
    """Where the cube came from: the input's affine and grid, the axes flipped to MNI signs, crop and zoom."""

    affine: np.ndarray
    shape: tuple[int, int, int]
    flip_axes: tuple[int, ...]
    bbox: BBox
    transform: Transform


@dataclass
class Segmentation:
    bundles: tuple[str, ...]
    output_type: str
    source: str  # the input's path, or a description of an in-memory input
    fused: np.ndarray | FusedCube = field(repr=False)  # (C, S, S, S) float32, upstream's mean_fusion channel
    # first; a FusedCube keeps only the box read back (0 elsewhere: runtime.network.fused_cube)
    placement: Placement = field(repr=False)
    slices: SliceStats | None = None
    timings: dict[str, float] = field(default_factory=dict)
    model: str = ""  # the model's name (runtime.models.bundles.Model.name), recorded in statistics' _meta
    threshold: float | None = None  # dm_regression: written values below it are 0 (upstream's Config.THRESHOLD)
    single_orientation: bool = False  # the y slices only (--single_orientation): endings masks are float32
    # --uncertainty ({"samples", "seed"}): ``fused`` holds the dropout std maps, written as float32 without
    # thresholds or post-processing to bundle_uncertainties (upstream's layout)
    uncertainty: dict | None = None

    @property
    def affine(self) -> np.ndarray:
        return self.placement.affine

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.placement.shape

    def written(self, options: SaveOptions) -> SaveOptions:
        """The save options in effect (:meth:`SaveOptions.written_for`)."""
        return options.written_for(self.uncertainty is not None)

    def _spec(self, options: SaveOptions, paths: tuple[Path, ...] = ()) -> OutputSpec:
        options = self.written(options)
        p = self.placement
        return OutputSpec(output_type=self.output_type, bundles=self.bundles, paths=paths,
                          single_file=options.single_file, probabilities=options.probabilities,
                          postprocess=options.postprocess, affine=p.affine, flip_axes=p.flip_axes,
                          transform=p.transform, bbox=p.bbox, shape=p.shape, threshold=self.threshold,
                          single_orientation=self.single_orientation)

    def _index(self, name: str) -> int:
        try:
            return self.bundles.index(name)
        except ValueError:
            raise KeyError(f"no bundle {name!r} in this {self.output_type} model") from None

    def probability(self, name: str) -> np.ndarray:
        """One bundle's fused probability on the input grid, float32 (upstream's --get_probabilities values;
        with ``uncertainty``: the bundle's uncertainty map, upstream's bundle_uncertainties values)."""
        return bundle_volume(self.fused[self._index(name)], name, self._spec(SaveOptions(probabilities=True)))[0]

    def mask(self, name: str, postprocess: bool = True) -> np.ndarray:
        """One bundle's mask on the input grid, uint8 0/1 (upstream's values; blob removal unless not
        ``postprocess``, tract segmentation only)."""
        if self.uncertainty:
            raise ValueError("this prediction holds uncertainty maps (--uncertainty), not probabilities: "
                             "probability(name) gives a bundle's map")
        volume = bundle_volume(self.fused[self._index(name)], name, self._spec(SaveOptions(postprocess=postprocess)))[0]
        return volume.astype(np.uint8, copy=False)

    @property
    def probabilities(self) -> np.ndarray:
        """(C, X, Y, Z) float32 on the input grid."""
        return np.stack([self.probability(name) for name in self.bundles])

    def masks(self, postprocess: bool = True) -> np.ndarray:
        """(C, X, Y, Z) uint8 on the input grid, equal to upstream's masks."""
        return np.stack([self.mask(name, postprocess) for name in self.bundles])

    def statistics(self, postprocess: bool = True, subject: str | None = None) -> dict:
        """``runtime.run --statistics``'s document (:mod:`runtime.qc.statistics`): per bundle the voxel count, volume
        in ml, centroid in world mm, bounding box and mean probability inside the mask, plus ``_meta`` (the same
        as the command line's: ``subject`` defaults to the input's file name without .nii.gz)."""
        from runtime.qc.statistics import StatisticsAccumulator, masks_meta

        meta = masks_meta(subject=subject or strip_nifti(Path(self.source).name), model=self.model or self.output_type,
                          source=self.source)
        stats = StatisticsAccumulator(self.affine, meta)
        for name in self.bundles:
            stats.add(name, self.mask(name, postprocess), self.probability(name))
        return stats.document()

    def files(self, outdir: str | os.PathLike[str], options: SaveOptions = SaveOptions()) -> list[Path]:
        """The files :meth:`save` writes, in upstream's layout."""
        return output_paths(self.output_type, self.bundles, options.single_file, options.probabilities, outdir,
                            uncertainty=self.uncertainty is not None, **options.folders())

    def needed_bytes(self, options: SaveOptions) -> int:
        """Upper bound of the outputs' size on disk (:func:`runtime.io.nifti_io.output_bytes`)."""
        options = self.written(options)
        return output_bytes(self.output_type, len(self.bundles), self.shape, options.probabilities,
                            options.postprocess, self.single_orientation)

    def save(self, outdir: str | os.PathLike[str], single_file: bool = False, probabilities: bool = False,
             postprocess: bool = True, force: bool = False, statistics: bool = False,
             rescale_dm: bool = False) -> list[Path]:
        """Write upstream's output layout under ``outdir`` (and statistics.json), all or nothing, with the
        writer every run uses (:func:`runtime.outputs.save.save_segmentation`); returns the files."""
        save = SaveOptions(single_file=single_file, probabilities=probabilities, postprocess=postprocess,
                           rescale_dm=rescale_dm)
        return save_segmentation(self, outdir, save, statistics, force)

    def write_into(self, staged: StagedOutputs, options: SaveOptions,
                   on_bundle: BundleHook | None = None) -> list[Path]:
        """Write the outputs into ``staged`` (committed by the caller's :func:`output_folder`); returns the final
        paths. ``on_bundle`` sees each written volume (statistics, preview) without recomputing it."""
        final = self.files(staged.outdir, options)
        staged_paths = tuple(staged.path(p.relative_to(staged.outdir)) for p in final)
        spec = self._spec(options, staged_paths)
        if options.rescale_dm and self.output_type == "dm_regression":
            found = value_range(self.fused, spec)
            if found is None:
                log.warning("--rescale_dm: every written value is the same; the density maps are written unscaled")
            spec = dataclasses.replace(spec, value_range=found)
        written, _ = write_outputs(self.fused, spec, on_bundle)
        return [staged.outdir / p.relative_to(staged.staging) for p in written]
