"""What runs for one subject on a worker (a Dask worker process, or the driver itself): open the pipeline once per
process, segment the subject into ``OUTROOT/<subject>/`` all or nothing, then write its done-record last.

A subject's folder is locked while it runs (:mod:`runtime.outputs.output_set`); a worker that finds it locked by a run
that outlived its driver (a ``kill -9`` of the driver leaves Dask workers finishing their task) waits for the
lock, then takes the other run's result if it completed.
"""
from __future__ import annotations

import argparse
import fcntl
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from runtime.io.checksum import sha256_of
from runtime.cohort.records import (InputIdentity, done_record, is_done, remove_done_record,
                                    write_done_record)
from runtime.errors import TractSegError, one_line
from runtime.outputs.output_set import LOCK_NAME

_PIPELINES: dict[tuple, Any] = {}
_LOCK = threading.Lock()  # one subject at a time per process: backends are not all thread-safe
LOCK_WAIT_S = 900.0


def pipeline_options(args: argparse.Namespace) -> tuple:
    return (args.artifacts, args.output_type, args.tract_definition, args.backend, args.device,
            None if args.nr_cpus == -1 else args.nr_cpus, args.precision, args.self_check)


def cached_pipeline(args: argparse.Namespace):
    """This process's pipeline for these options, opened (bundle verified, backend loaded) on first use."""
    from runtime.pipeline import TractSegPipeline

    key = pipeline_options(args)
    if key not in _PIPELINES:
        if not _PIPELINES:  # the driver says what concerns the whole study (demo weights) once
            logging.getLogger("tractseg_aot").setLevel(logging.ERROR)
        _PIPELINES[key] = TractSegPipeline.open(*key)
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


def process_subject(subject: str, peaks: str, outroot: str, args: argparse.Namespace, bundle_id: str,
                    options: dict[str, Any]) -> dict[str, Any]:
    """Segment one subject; returns its cohort.csv row (status done or failed, never raises for a bad subject)."""
    from runtime.qc.report import peak_rss_mb
    from runtime.run import segment_subject

    folder = Path(outroot) / subject
    started = time.perf_counter()
    row: dict[str, Any] = {"subject": subject, "peaks": peaks, "status": "failed", "error": "", "seconds": 0.0,
                           "peak_rss_mb": 0.0, "slices_run": "", "worker": worker_name()}
    with _LOCK:
        try:
            wait_for_lock(folder)
            stored = is_done(folder, peaks, bundle_id, options) if not args.force else None
            if stored is not None:  # finished by a run that outlived its driver
                return stored
            identity = InputIdentity.stat(peaks)
            remove_done_record(folder)
            digest = sha256_of(peaks)  # recorded once, never recomputed on reruns
            report = segment_subject(cached_pipeline(args), peaks, folder, argparse.Namespace(**{
                **vars(args), "force": True, "quiet": True}), subject)
            row.update(status="done", seconds=round(time.perf_counter() - started, 2),
                       peak_rss_mb=report["peak_rss_mb"], slices_run=(report["slices"] or {}).get("run", ""))
            outputs = [Path(p).relative_to(folder).as_posix() for p in report["outputs"]]
            write_done_record(folder, done_record(subject, peaks, InputIdentity(identity.size, identity.mtime_ns,
                                                                                  digest),
                                                  bundle_id, options, outputs, row, report["timings_s"]))
        except TractSegError as error:
            row.update(error=one_line(error, 500), seconds=round(time.perf_counter() - started, 2),
                       peak_rss_mb=peak_rss_mb())
        except OSError as error:  # the input vanished between discovery and run, an unreadable folder...
            row.update(error=f"{peaks}: {one_line(error, 400)}", seconds=round(time.perf_counter() - started, 2))
    return row
