"""Which tracker a ``Tracking`` command line asks for, decided as upstream decides it.

Mirrors (TractSeg 2.10):

* ``bin/Tracking`` ``main`` (``tracking_on_FODs``, ``tracking_software``: ``tractseg`` only for ``--algorithm
  prob`` without ``--track_FODs``, else ``mrtrix``; ``tracking_algorithm``: the ``--track_FODs`` value, else
  ``FACT`` for ``det``, else ``fixed_prob``; ``filter_tracking_by_endpoints``)      -> :func:`tracking_mode`
* ``tracking.get_tracking_folder_name``                                            -> :func:`folder_name`

Upstream's ``--track_best_orig`` only changes the ``tractseg`` tracker (it is read in that branch of
``tracking.track``); with an MRtrix mode it is ignored there, and here with a warning line. Upstream's help says
``--track_FODs`` does not work with ``--no_filtering_by_endpoints`` (its code would run FACT on the TOMs into a
``FOD_*`` folder): refused here with one line.
"""
from __future__ import annotations

from dataclasses import dataclass

from runtime.errors import InputError

FOD_ALGORITHMS = ("FACT", "SD_STREAM", "iFOD2")


@dataclass(frozen=True)
class TrackingMode:
    """What ``tracking.track`` is called with for every bundle."""

    software: str              # "tractseg" (our numpy port) or "mrtrix" (tckgen)
    algorithm: str             # "fixed_prob", "FACT", "SD_STREAM" or "iFOD2"
    on_fods: bool              # tckgen on the -i image (FODs, or peaks for FACT) instead of the TOMs
    best_orig: bool            # the tractseg tracker on the best original peaks
    filter_by_endpoints: bool  # False: FACT on the TOMs seeded from the -i peak mask, no end filtering

    @property
    def uses_mrtrix(self) -> bool:
        return self.software == "mrtrix" or not self.filter_by_endpoints


def tracking_mode(algorithm: str = "prob", track_fods: str = "False", track_best_orig: bool = False,
                  no_filtering_by_endpoints: bool = False) -> TrackingMode:
    """Upstream ``Tracking``'s flags -> the mode; a combination upstream documents as not working is one line."""
    if algorithm not in ("prob", "det"):
        raise InputError(f"--algorithm: {algorithm!r} is not one of prob, det")
    if track_fods not in ("False", *FOD_ALGORITHMS):
        raise InputError(f"--track_FODs: {track_fods!r} is not one of False, {', '.join(FOD_ALGORITHMS)}")
    on_fods = track_fods != "False"
    if on_fods and no_filtering_by_endpoints:
        raise InputError("--track_FODs does not work with --no_filtering_by_endpoints (upstream's Tracking help: "
                         "FOD tracking is always filtered by the bundle and endpoint masks)")
    software = "tractseg" if (not on_fods and algorithm == "prob") else "mrtrix"
    tracker = track_fods if on_fods else "FACT" if algorithm == "det" else "fixed_prob"
    best_orig = track_best_orig and software == "tractseg" and not no_filtering_by_endpoints
    return TrackingMode(software, tracker, on_fods, best_orig, not no_filtering_by_endpoints)


def folder_name(mode: TrackingMode, track_best_orig: bool) -> str:
    """``get_tracking_folder_name(tracking_algorithm, use_best_original_peaks)``: the folder under ``-o``."""
    if mode.algorithm == "FACT":
        return "Peaks_FACT_trackings"
    if mode.algorithm in ("SD_STREAM", "iFOD2"):
        return f"FOD_{mode.algorithm}_trackings"
    return "BestOrig_trackings" if track_best_orig else "TOM_trackings"
