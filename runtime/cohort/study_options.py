"""What a study run means, typed: :class:`StudyOptions`, the study runner's own switches (nnU-Net's
``num_parts`` / ``part_id`` among them) around each subject's options."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.chain import ChainOptions
from runtime.cohort.engine import default_threads
from runtime.cohort.parts import check_parts
from runtime.cohort.subjects import DEFAULT_PATTERN
from runtime.host import available_cores
from runtime.options import RunOptions


@dataclass(frozen=True)
class StudyOptions:
    """``per_subject``: each subject's run (:class:`runtime.options.RunOptions`) or whole chain
    (:class:`runtime.chain.ChainOptions`). ``pattern``: the peaks file name searched in input folders;
    ``list_file``: one peaks path a line, or a CSV of subject,peaks. ``workers``: worker processes (None: from
    cores and memory; 0: every subject in this process, without Dask); ``threads_per_worker`` (None: the cores,
    at most 8; a subject's own ``backend.threads`` wins); ``scheduler``: an existing Dask cluster's address;
    ``num_parts`` / ``part_id``: run part ``part_id`` of a deterministic split (job arrays)."""

    per_subject: RunOptions | ChainOptions = RunOptions()
    pattern: str = DEFAULT_PATTERN
    list_file: str | None = None
    workers: int | None = None
    threads_per_worker: int | None = None
    scheduler: str | None = None
    num_parts: int = 1
    part_id: int = 0

    def __post_init__(self) -> None:
        check_parts(self.num_parts, self.part_id)  # ValueError, one line
        if os.path.isabs(self.pattern) or ".." in Path(self.pattern).parts:
            raise ValueError(f"--pattern {self.pattern!r}: a pattern is searched inside each input folder; it "
                             "must be relative and must not leave the folder (no leading / and no ..)")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"--workers must be >= 0, not {self.workers}")
        if self.threads_per_worker is not None and self.threads_per_worker < 1:
            raise ValueError(f"--threads-per-worker must be >= 1, not {self.threads_per_worker}")

    def replace(self, **changes: Any) -> StudyOptions:
        return dataclasses.replace(self, **changes)

    def subject_options(self) -> RunOptions | ChainOptions:
        """``per_subject`` with the backend's threads set: its own, else ``threads_per_worker``, else the
        default rule (:func:`runtime.cohort.engine.default_threads`)."""
        backend = self.per_subject.backend
        if backend.threads is not None:
            return self.per_subject
        threads = self.threads_per_worker or default_threads(available_cores())
        return self.per_subject.replace(backend=backend.replace(threads=threads))
