"""The result of a TOM prediction: the preprocessed cube and the part models, run one part at a time on demand.

Mirrors (TractSeg 2.10) ``bin/TractSeg`` for ``--output_type TOM``: for each of Part1..Part4 ``run_tractseg`` with
``single_orientation`` (coronal slices, ``SLICE_DIRECTION = "y"``, the raw outputs: no sigmoid, no mean),
``cut_and_scale_img_back_to_original_img`` + ``add_original_zero_padding_again`` (here
:func:`runtime.io.geometry.to_original_space` per channel), ``peak_utils.mask_and_normalize_peaks``
(:mod:`runtime.tom.masks`), the flip back to the input's axes and
``img_utils.save_multilabel_img_as_multiple_files_peaks`` (``TOM/<bundle>.nii.gz``, float32, 3 channels).

Array layout: :meth:`TOMResult.tom` and :meth:`TOMResult.raw` give one bundle as ``(X, Y, Z, 3)`` float32 on the
input grid, the vector's (x, y, z) last, exactly the layout of upstream's files. Memory: only one part's raw
outputs ``(54, S, S, S)`` float32 (645 MB at S = 144) are held at a time, and only one part's model is loaded
(:meth:`runtime.pipeline.TractSegPipeline.part_outputs`); asking for bundles part by part (as :meth:`write_into`
does) runs each part once.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime.errors import InputError
from runtime.io.geometry import flip, to_original_space
from runtime.io.nifti_io import output_bytes, output_paths, write_nifti_atomic
from runtime.network.predict import SliceStats
from runtime.outputs.output_set import StagedOutputs
from runtime.options import SaveOptions
from runtime.outputs.segmentation import Placement
from runtime.tom.masks import mask_and_normalise, prepared_mask

PartRunner = Callable[[int], tuple[np.ndarray, SliceStats]]  # part index -> ((3 * n, S, S, S) outputs, stats)


@dataclass
class TOMResult:
    bundles: tuple[str, ...]
    part_bundles: tuple[tuple[str, ...], ...]  # each part model's bundles, in order
    source: str
    placement: Placement = field(repr=False)
    run_part: PartRunner = field(repr=False)
    masks: Path | None = None  # the bundle segmentations folder (tom() and write_into() need it)
    timings: dict[str, float] = field(default_factory=dict)
    model: str = "TOM"
    output_type: str = "TOM"
    slices: SliceStats | None = None  # summed over the parts run so far
    _held: tuple[int, np.ndarray] | None = field(default=None, repr=False)

    @property
    def affine(self) -> np.ndarray:
        return self.placement.affine

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.placement.shape

    def _where(self, name: str) -> tuple[int, int]:
        for index, names in enumerate(self.part_bundles):
            if name in names:
                return index, names.index(name)
        raise KeyError(f"no bundle {name!r} in the TOM model")

    def _outputs(self, part: int) -> np.ndarray:
        if self._held is None or self._held[0] != part:
            self._held = None  # free the previous part's outputs before the next part runs
            outputs, stats = self.run_part(part)
            self._held = (part, outputs)
            s = self.slices
            self.slices = stats if s is None else SliceStats(s.slices + stats.slices, s.run + stats.run,
                                                             s.skipped + stats.skipped, s.batches + stats.batches)
        return self._held[1]

    def release(self) -> None:
        """Drop the part outputs held."""
        self._held = None

    def _mni(self, name: str) -> np.ndarray:
        """One bundle's raw outputs on the input grid, still in MNI orientation: (X, Y, Z, 3) float32."""
        part, index = self._where(name)
        outputs = self._outputs(part)
        p = self.placement
        return np.stack([to_original_space(outputs[3 * index + c], p.transform, p.bbox, p.shape)
                         for c in range(3)], axis=-1)

    def raw(self, name: str) -> np.ndarray:
        """One bundle's network outputs on the input grid, unmasked and not normalised: (X, Y, Z, 3) float32."""
        return np.ascontiguousarray(flip(self._mni(name), self.placement.flip_axes))

    def tom(self, name: str, masks: str | os.PathLike[str] | None = None) -> np.ndarray:
        """One bundle's TOM as upstream writes it: (X, Y, Z, 3) float32, zero outside the bundle's dilated mask
        (from ``masks`` or :attr:`masks`), unit length inside."""
        folder = masks if masks is not None else self.masks
        if folder is None:
            raise InputError("TOM needs the bundle segmentations: pass masks=DIR (tract_segmentation outputs)")
        volume = mask_and_normalise(self._mni(name), prepared_mask(folder, name))
        return np.ascontiguousarray(flip(volume, self.placement.flip_axes))

    def files(self, outdir: str | os.PathLike[str], options: SaveOptions = SaveOptions()) -> list[Path]:
        return output_paths("TOM", self.bundles, options.single_file, options.probabilities, outdir,
                            **options.folders())

    def needed_bytes(self, options: SaveOptions) -> int:
        return output_bytes("TOM", 3 * len(self.bundles), self.shape, True)

    def write_into(self, staged: StagedOutputs, options: SaveOptions,
                   on_bundle: Callable[[int, str, np.ndarray], None] | None = None) -> list[Path]:
        """Write TOM/<bundle>.nii.gz for every bundle into ``staged``, part by part; returns the final paths."""
        if options.single_file:
            raise InputError("--single_output_file is not supported for TOM")
        written = []
        for index, (name, final) in enumerate(zip(self.bundles, self.files(staged.outdir, options), strict=True)):
            volume = self.tom(name)
            write_nifti_atomic(volume, self.affine, staged.path(final.relative_to(staged.outdir)),
                               dtype=np.float32)
            if on_bundle:
                on_bundle(index, name, volume)
            written.append(final)
        self.release()
        return written
