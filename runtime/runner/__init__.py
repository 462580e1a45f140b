"""The subject runner: one subject's checks, run and report, shared by every caller (see
:mod:`runtime.runner.subject`)."""
from runtime.runner.checks import CheckedSubject, check_destination, read_subject
from runtime.runner.report import RunReport
from runtime.runner.subject import run_subject, segment_subject

__all__ = ["CheckedSubject", "RunReport", "check_destination", "read_subject", "run_subject", "segment_subject"]
