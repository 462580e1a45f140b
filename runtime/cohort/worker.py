"""What runs for one subject on a worker (a Dask worker process, or the driver itself): open the pipeline once per
process, segment the subject into ``OUTROOT/<subject>/`` all or nothing, then write its done-record last.

A subject's folder is locked while it runs (:mod:`runtime.outputs.output_set`); a worker that finds it locked by a run
that outlived its driver (a ``kill -9`` of the driver leaves Dask workers finishing their task) waits for the
lock, then takes the other run's result if it completed.
"""
from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runtime.chain import ChainOptions
from runtime.cohort.chain_subject import run_chain_subject, scalar_identity, scalar_unchanged
from runtime.cohort.records import (CohortRow, InputIdentity, done_record, is_done, remove_done_record,
                                    write_done_record)
from runtime.errors import InputError, TractSegError, one_line
from runtime.host import CollectLines, peak_rss_mb, save_traceback
from runtime.io.checksum import sha256_of
from runtime.io.nifti_io import PEAKS_FILE
from runtime.io.peaks_input import check_input_path
from runtime.options import RunOptions
from runtime.outputs.output_set import LOCK_NAME
from runtime.pipeline import TractSegPipeline
from runtime.runner import segment_subject

_PIPELINES: dict[tuple, Any] = {}
_LOCK = threading.Lock()  # one subject at a time per process: backends are not all thread-safe
LOCK_WAIT_S = 900.0
log = logging.getLogger("tractseg_aot")


def cached_pipeline(options: RunOptions) -> TractSegPipeline:
    """This process's pipeline for these options, opened (bundle verified, backend loaded) on first use. The
    driver has already said what concerns the whole study (demo weights), so the workers do not repeat it."""
    key = options.pipeline_key()
    if key not in _PIPELINES:
        _PIPELINES[key] = TractSegPipeline.open_with(options, warn_demo=False)
    return _PIPELINES[key]


def worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


def wait_for_lock(folder: Path, timeout: float = LOCK_WAIT_S) -> None:
    """Return once no process holds ``folder``'s run lock (or after ``timeout``: the run then reports it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            fd = os.open(folder / LOCK_NAME, os.O_RDONLY)
        except OSError:
            return  # no lock file: nobody runs there
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return
        except OSError:
            time.sleep(0.5)
        finally:
            os.close(fd)


@contextmanager
def subject_log() -> Iterator[list[str]]:
    """For one subject: its warnings collected (they travel in its row, and the driver prints them) and its
    info lines silenced; the logger is as it was afterwards (so the study's own lines still print)."""
    collect = CollectLines(logging.WARNING)
    handlers, level, propagate = log.handlers[:], log.level, log.propagate
    log.handlers[:] = [collect]
    log.setLevel(logging.WARNING)
    log.propagate = False
    try:
        yield collect.lines
    finally:
        log.handlers[:] = handlers
        log.setLevel(level)
        log.propagate = propagate


Gradients = tuple[str | None, str | None, str | None]  # a DWI's own bvals, bvecs and brain mask (a BIDS series)


def with_gradients(per_subject: RunOptions | ChainOptions, gradients: Gradients | None) -> RunOptions | ChainOptions:
    """The subject's options: a raw-DWI run with the series' own bvals, bvecs and mask (they enter the
    done-record, so a rerun with other files redoes the subject)."""
    if gradients is None or not isinstance(per_subject, RunOptions) or per_subject.raw is None:
        return per_subject
    return per_subject.replace(raw=per_subject.raw.replace(bvals=gradients[0], bvecs=gradients[1],
                                                           brain_mask=gradients[2]))


def process_subject(subject: str, peaks: str, outroot: str, per_subject: RunOptions | ChainOptions,
                    bundle_id: str, gradients: Gradients | None = None,
                    progress: bool = False, problem: str | None = None) -> CohortRow:
    """Segment one subject (``per_subject`` a ChainOptions: run the whole chain,
    :mod:`runtime.cohort.chain_subject`); returns its cohort.csv row (status done or failed). Never raises for a
    subject: an unexpected error fails that subject alone, as a Dask task's exception does, with the traceback
    saved. ``gradients``: see :func:`with_gradients`; ``problem``: a reason known before the run (a BIDS series
    without .bval), the subject's row fails with it."""
    folder = Path(outroot) / subject
    started = time.perf_counter()
    row = CohortRow(subject=subject, peaks=peaks, worker=worker_name())
    chain = per_subject if isinstance(per_subject, ChainOptions) else None
    with _LOCK, subject_log() as warnings:
        try:
            if problem is not None:
                raise InputError(problem)
            wait_for_lock(folder)
            per_subject = with_gradients(per_subject, gradients)
            shaping = per_subject.output_record()
            stored = is_done(folder, peaks, bundle_id, shaping) if not per_subject.force else None
            if stored is not None and chain is not None:  # the driver's rule: a changed scalar map redoes it
                stored = stored if scalar_unchanged(str(folder), peaks, subject, chain) else None
            if stored is not None:  # finished by a run that outlived its driver
                return CohortRow.from_mapping(stored)
            check_input_path(peaks)
            identity = InputIdentity.stat(peaks)
            remove_done_record(folder)
            digest = sha256_of(peaks)  # recorded once, never recomputed on reruns
            quiet = not progress  # progress: this process's own bars (--workers 0)
            if chain is not None:  # its three pipelines opened (and cached) as its steps need them
                report = run_chain_subject(peaks, folder, subject, chain.replace(force=True, quiet=quiet),
                                           cached_pipeline)
            else:
                run = per_subject.replace(force=True, quiet=quiet)
                report = segment_subject(peaks, folder, run, lambda: cached_pipeline(run), subject=subject)
            made = chain is None and per_subject.raw is not None  # a DWI: the row names the peaks made from it
            row = CohortRow(subject, str(folder / PEAKS_FILE) if made else peaks, "done", "",
                            round(time.perf_counter() - started, 2), report.peak_rss_mb,
                            report.slices_run if report.slices_run is not None else "", row.worker,
                            " | ".join(warnings))
            outputs = [Path(p).relative_to(folder).as_posix() for p in report.outputs]
            record = done_record(subject, peaks, InputIdentity(identity.size, identity.mtime_ns, digest), bundle_id,
                                 shaping, outputs, row.as_dict(), report.timings_s)
            if chain is not None:  # the scalar map too: a rerun redoes the subject when it changed
                record["scalar"] = scalar_identity(report.document["scalar"])
            write_done_record(folder, record)
        except TractSegError as error:
            row = _failed(row, one_line(error, 500), started, warnings)
        except OSError as error:  # the input vanished between discovery and run, an unreadable folder...
            row = _failed(row, f"{peaks}: {one_line(error, 400)}", started, warnings)
        except Exception as error:  # a bug: this subject fails, the study goes on (as under Dask)
            row = _failed(row, f"internal error, please report: {type(error).__name__}: {one_line(error, 300)} "
                               f"(traceback saved to {save_traceback()})", started, warnings)
    return row


def _failed(row: CohortRow, error: str, started: float, warnings: list[str]) -> CohortRow:
    return CohortRow(row.subject, row.peaks, "failed", error, round(time.perf_counter() - started, 2),
                     peak_rss_mb(), "", row.worker, " | ".join(warnings))
