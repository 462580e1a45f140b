"""Tractometry as upstream TractSeg 2.10's ``Tractometry`` does it: a scalar map (e.g. FA) sampled at
``nr_points`` segments along each tracked bundle, one CSV per subject in upstream's exact layout.

Command line: ``python -m runtime.tractometry -i DIR/TOM_trackings -o OUT.csv -e DIR/endings_segmentations
-s FA.nii.gz [--nr_points 100] [--tracking_format tck|trk|trk_legacy|trx] [--bundles A,B]`` (console script
``tractseg-aot-tractometry``). One CSV column per bundle asked for (default: upstream's 50; a bundle without a
tractogram gets zeros, said in one info line): the rule is in :mod:`runtime.tractometry.table`.

Python API:

* :func:`tractometry` ``(tracking_dir, endings_dir, scalar_path, nr_points, tracking_format)`` ->
  :class:`TractometryTable` (``bundles``, ``mean``, ``std``; ``write_csv`` writes upstream's CSV atomically);
* :func:`profile` ``(streamlines, beginnings, scalar, affine, nr_points, dilate)`` -> (mean, std) of one bundle;
* :func:`read_streamlines` ``(path, tracking_format)``: one tractogram, checked whole
  (:mod:`runtime.tractometry.tractograms`).

Needs the ``tracking`` extra (dipy: QuickBundles and resampling, as upstream; trx-python for ``trx``).
"""
from runtime.tractometry.profile import profile
from runtime.tractometry.table import TRACTOMETRY_BUNDLES, TractometryTable, tractometry
from runtime.tractometry.tractograms import read_streamlines

__all__ = ["TRACTOMETRY_BUNDLES", "TractometryTable", "profile", "read_streamlines", "tractometry"]
