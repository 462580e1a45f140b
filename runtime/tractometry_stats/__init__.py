"""Group statistics along the tracts: upstream TractSeg 2.10's ``plot_tractometry_results`` without pandas,
seaborn or VTK, vectorised over bundles x points x permutations.

Command line: ``python -m runtime.tractometry_stats`` (console script ``tractseg-aot-stats``), see
:mod:`runtime.tractometry_stats.__main__`. Python API:

* :func:`read_subjects_file` (upstream's subjects file) / :func:`read_study` (a study table and a participants
  table) -> :class:`Study`;
* :func:`analyse` ``(study, nperm, alpha, mc, rng)`` -> :class:`Result` (per point statistic, p, significance;
  per bundle alphaFWE);
* :func:`render` ``(study, result)`` -> the figure's bytes (needs matplotlib, the ``stats`` extra).
"""
from runtime.tractometry_stats.inputs import Study
from runtime.tractometry_stats.stats import Result, analyse
from runtime.tractometry_stats.study_table import read_study
from runtime.tractometry_stats.subjects_file import read_subjects_file


def render(*args, **kwargs) -> bytes:
    from runtime.tractometry_stats.figure import render as _render

    return _render(*args, **kwargs)


__all__ = ["Result", "Study", "analyse", "read_study", "read_subjects_file", "render"]
