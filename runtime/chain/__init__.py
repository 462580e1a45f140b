"""TractSeg's whole chain on one subject, without PyTorch or JAX: tract_segmentation -> endings_segmentation ->
TOM (on the masks just written) -> tracking -> tractometry, in upstream's output layout.

Command line: ``python -m runtime.chain PEAKS -o OUT --scalar FA.nii.gz [--artifacts-root DIR | --tract-artifacts
DIR --endings-artifacts DIR --tom-artifacts DIR] [--bundles A,B] [--nr_fibers N] [--tracking_format tck|trk|
trk_legacy] [--nr_points 100] [--seed S]`` (console script ``tractseg-aot-chain``); a study:
``python -m runtime.cohort --chain --scalar-pattern PATTERN``.

Python API::

    from runtime.chain import ChainOptions, run_chain
    report = run_chain("sub-01/peaks.nii.gz", "sub-01/tractseg_output", "sub-01/FA.nii.gz",
                       ChainOptions(artifacts_root="bundles", bundles=("CST_left", "CST_right")))
    report.csv      # sub-01/tractseg_output/Tractometry.csv

Modules: :mod:`~runtime.chain.options` (options, where the bundles are), :mod:`~runtime.chain.api` (checks and
the run). The command line: :mod:`runtime.chain.__main__` (its flags: :mod:`runtime.cli.arguments`). Needs the
``tracking`` extra.
"""
from runtime.chain.api import ChainPlan, ChainReport, check_chain, run_chain
from runtime.chain.options import STEP_TASKS, TRACTOMETRY_CSV, ChainOptions

__all__ = ["STEP_TASKS", "TRACTOMETRY_CSV", "ChainOptions", "ChainPlan", "ChainReport", "check_chain", "run_chain"]
