"""The hostile-input fuzzer (tests/fuzz/) as part of the fast suite: 60 cases with a fixed seed, every one of
them held to the CLI's contract (exit 0 and a complete output set, or exit 1 with one error line and nothing
written; never a traceback, an internal error or a timeout). Rerun a failing case with
``python -m tests.fuzz --seed 0 --case I``."""
from __future__ import annotations

import io

from tests.fuzz import fuzz, summary

CASES, SEED = 60, 0


def test_fuzz_60_cases(tract_small, tmp_path):
    table = io.StringIO()
    results = fuzz(CASES, SEED, tract_small, root=tmp_path, out=table)
    assert len(results) == CASES
    kinds = {case.kind for case, _ in results}
    assert {"gzip", "header", "dtype", "shape", "affine", "values", "manifest", "path"} <= kinds, kinds
    failed = [(case, outcome) for case, outcome in results if outcome.violations]
    assert not failed, f"{summary(results)}\n{table.getvalue()}"


STUDY_CASES = 8


def test_fuzz_study_runner_8_cases(tract_small, tmp_path):
    """The study runner's fuzzer (tests/fuzz/study.py): hostile studies, edits between runs, signals and two runs
    at once, each run held to the runner's contract. Rerun with ``python -m tests.fuzz.study --seed 0``."""
    from tests.fuzz.study import fuzz_studies

    table = io.StringIO()
    results = fuzz_studies(STUDY_CASES, SEED, str(tract_small), tmp_path, out=table)
    assert len(results) == STUDY_CASES
    assert not [case for case, problems in results if problems], table.getvalue()
