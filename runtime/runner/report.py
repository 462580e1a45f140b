"""What one subject's run did, as a value (:class:`RunReport`) and as the JSON document of ``--report`` and the
study runner's done-records."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.host import PROG, package_versions
from runtime.io.nifti_io import output_dtype
from runtime.network.predict import SliceStats
from runtime.options import RunOptions
from runtime.outputs.segmentation import Placement


@dataclass(frozen=True)
class RunReport:
    """What one subject's run did: the files it wrote, seconds per stage, slices run, the process's peak RSS,
    and the whole JSON record (``--report``, the study runner's done-record)."""

    outputs: tuple[Path, ...]
    timings_s: dict[str, float]
    slices_run: int | None
    peak_rss_mb: float
    document: dict[str, Any]


def run_document(source: str, placement: Placement, cube_size: int, options: RunOptions,
                 pipeline_record: dict[str, Any], slices: SliceStats | None, timings: dict[str, float],
                 rss: float, written: list[Path]) -> dict[str, Any]:
    """The ``--report`` JSON of one run."""
    p = placement
    return {
        "tool": PROG, "versions": package_versions(),
        "input": {"path": str(Path(source).resolve()), "shape": [*p.shape, 9],
                  "affine": p.affine.tolist(), "flip_axes": list(p.flip_axes), "bbox": [list(b) for b in p.bbox],
                  "cube_size": cube_size},
        "request": {**options.output_record(), "force": options.force},
        **pipeline_record,
        "slices": slices.as_dict() if slices else None,
        "timings_s": timings,
        "peak_rss_mb": rss,
        "output_dtype": str(output_dtype(options.output_type, options.written.probabilities, options.written.postprocess,
                                         single_orientation=options.inference.single_orientation)),
        "outputs": [str(f) for f in written],
    }
