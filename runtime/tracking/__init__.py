"""Bundle-specific tracking on TractSeg's TOMs, as upstream TractSeg 2.10's ``Tracking`` does it, without
PyTorch: a vectorised numpy port of its probabilistic tracker (``libs/tractseg_prob_tracking.py``).

Command line: ``python -m runtime.tracking -i PEAKS -o DIR [--bundles A,B] [--nr_fibers 2000]
[--tracking_format tck|trk|trk_legacy|trx] [--tracking_dilation 0] [--seed S] [--force]`` (console script
``tractseg-aot-tracking``), see :mod:`runtime.tracking.__main__`.

Python API:

* :func:`track_output_folder` ``(output_dir, bundles, TrackingOptions(...))`` -> paths written, upstream's layout
  (``DIR/TOM_trackings/<bundle>.<ext>`` plus a ``.json`` sidecar with the seed);
* :func:`track_bundle` ``(inputs, nr_fibers, dilation, rng)`` -> (``nibabel`` ``ArraySequence`` in RAS mm, record),
  with ``inputs = read_bundle_inputs(BundleFiles.under(DIR, "CST_right"))``;
* :func:`save_tractogram` to write streamlines as upstream's ``tck`` / ``trk`` / ``trk_legacy``, or ``trx``
  (:mod:`~runtime.tracking.trx_format`, not upstream's);
* :func:`output_files` (what a run may write, for the ``--force`` check) and :func:`check_folder` (every input
  check, before anything is tracked).

Modules: :mod:`~runtime.tracking.walker` (the tracker on arrays), :mod:`~runtime.tracking.prepare` (files ->
arrays -> world mm), :mod:`~runtime.tracking.writers` (tractogram files), :mod:`~runtime.tracking.api`;
upstream's other modes: :mod:`~runtime.tracking.modes` (which one the flags ask for, and its folder),
:mod:`~runtime.tracking.tckgen` (``--algorithm det``, ``--track_FODs``, ``--no_filtering_by_endpoints``: MRtrix
``tckgen``), :mod:`~runtime.tracking.best_orig` (``--track_best_orig``).
Needs the ``tracking`` extra (dipy, for upstream's streamline compression; trx-python for ``trx``).
"""
from runtime.tracking.api import (DEFAULT_SEED, TrackingOptions, bundle_rng, check_folder, output_files,
                                  parse_bundles, track_bundle, track_output_folder)
from runtime.tracking.prepare import BundleFiles, BundleInputs, read_bundle_inputs
from runtime.tracking.writers import FORMATS, save_tractogram

__all__ = ["DEFAULT_SEED", "FORMATS", "BundleFiles", "BundleInputs", "TrackingOptions", "bundle_rng",
           "check_folder", "output_files", "parse_bundles", "read_bundle_inputs", "save_tractogram", "track_bundle", "track_output_folder"]
