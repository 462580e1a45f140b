"""The study runner: many subjects, one folder each, resumable, here or on a Dask cluster.

    from runtime.cohort import StudyOptions, run_study
    result = run_study(["study/"], "out", StudyOptions(RunOptions(qc=QCOptions(statistics=True)), workers=0))
    result.rows, result.table, result.status

Command line: ``python -m runtime.cohort INPUT... -o OUTROOT`` (console script ``tractseg-aot-cohort``)."""
from runtime.cohort.study import StudyResult, run_study
from runtime.cohort.study_options import StudyOptions
from runtime.cohort.subjects import Subject

__all__ = ["StudyOptions", "StudyResult", "Subject", "run_study"]
