"""BIDS layout handling for the BIDS App (``python -m runtime.bids BIDS_DIR OUTPUT_DIR participant``).

Library part (pure functions; the study runner is wired to them in :mod:`runtime.bids.app`):

- :func:`find_dwis` (``runtime.bids.layout``): every participant's (and session's) DWI, bval, bvec and optional
  brain mask by BIDS rules, filtered by participant / session labels -> ``list[BidsDwi]``; :func:`find_scalar_map`:
  a series' BEP016 parameter map (e.g. FA) for tractometry.
- :func:`mask_name`, :func:`probseg_name`, :func:`ending_name`, :func:`peaks_name`, :func:`tractogram_name`,
  :func:`tractometry_name`, :func:`derivative_name`, :func:`bids_label` (``runtime.bids.naming``): BIDS derivatives
  names for the outputs (BEP016 for the peaks, BEP046 for the tractograms), ``<out>/sub-<p>[/ses-<s>]/dwi/`` from
  ``BidsDwi.output_dir``.
- :func:`dataset_description`, :func:`write_dataset_description`: the derivative ``dataset_description.json``
  with ``GeneratedBy``.
"""
from runtime.bids.layout import BidsDwi, find_dwis, find_scalar_map, parse_name
from runtime.bids.naming import (BIDS_VERSION, bids_label, bids_labels, dataset_description, derivative_name,
                                 ending_name, mask_name, peaks_name, probseg_name, tract_entities, tractogram_name,
                                 tractometry_name, write_dataset_description)

__all__ = ["BIDS_VERSION", "BidsDwi", "bids_label", "bids_labels", "dataset_description", "derivative_name",
           "ending_name", "find_dwis", "find_scalar_map", "mask_name", "parse_name", "peaks_name", "probseg_name",
           "tract_entities", "tractogram_name", "tractometry_name", "write_dataset_description"]
