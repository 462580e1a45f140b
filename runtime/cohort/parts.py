"""Job-array parts of a study (nnU-Net's ``-num_parts`` / ``-part_id``): a deterministic split of the subjects."""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only
    from runtime.cohort.subjects import Subject


def check_parts(num_parts: int, part_id: int) -> None:
    """Refuse a job-array split that is not 1 <= num_parts and 0 <= part_id < num_parts (one-line ValueError)."""
    if isinstance(num_parts, bool) or not isinstance(num_parts, int) or num_parts < 1:
        raise ValueError(f"num_parts must be an integer >= 1 (got {num_parts!r})")
    if isinstance(part_id, bool) or not isinstance(part_id, int) or not 0 <= part_id < num_parts:
        raise ValueError(f"part_id must be an integer in 0..{num_parts - 1} (got {part_id!r})")


def split_parts(subjects: Iterable[Subject], num_parts: int, part_id: int) -> list[Subject]:
    """Part ``part_id`` of ``num_parts`` for job arrays, nnU-Net's way: ``sorted_by_id[part_id::num_parts]``."""
    check_parts(num_parts, part_id)
    return sorted(subjects, key=lambda subject: subject.id)[part_id::num_parts]
