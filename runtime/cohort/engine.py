"""Where subjects run: in this process (``--workers 0``), on an embedded Dask ``LocalCluster`` of worker processes
(the default), or on an existing Dask cluster (``--scheduler ADDRESS``). Dask (``distributed``) is the ``[cohort]``
extra, imported only here.

Default worker rule (:func:`default_threads`, :func:`default_workers`): backend threads per worker = the cores,
up to 8; workers = cores // threads (so one on a 2-core node), fewer when memory is short (:data:`WORKER_MEMORY_GB`
per worker). Measured on a 2-core AMD EPYC (AVX2), 4 HCP-size subjects, OpenVINO (benchmarks/README.md, "Cohort
throughput"): one worker x 2 threads ran the study in 758 s, two workers x 1 thread in 1007 s (a 1-thread
subject took ~500 s, a 2-thread one ~190 s), so threads beat processes here; the cap of 8 threads is not
measured (a larger node may do better with several workers: set --workers / --threads-per-worker).
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterator
from typing import Any

from runtime.cohort.subjects import Subject
from runtime.cohort.worker import process_subject
from runtime.errors import MissingExtraError, TractSegError, one_line

DASK_MISSING = "runtime.cohort needs Dask for worker processes: pip install 'tractseg-aot[cohort]' (or --workers 0)"
WORKER_MEMORY_GB = 2.5  # peak RSS of one worker, 72 bundles, HCP size (measured 1.87-1.91 GB) plus margin
ALLOWED_FAILURES = 2  # a subject whose worker died this many times more is reported failed


class CohortError(TractSegError):
    """A study-level problem (no Dask, an unreachable scheduler)."""


def default_threads(cores: int) -> int:
    """Backend threads per worker when --threads-per-worker is not given: every core, at most 8."""
    return max(1, min(cores, 8))


def default_workers(cores: int, memory_gb: float | None, threads_per_worker: int = 1) -> int:
    """Workers for this host: cores // threads, at least 1, at most what memory holds."""
    workers = max(1, cores // max(1, threads_per_worker))
    if memory_gb is not None:
        workers = max(1, min(workers, math.floor(memory_gb / WORKER_MEMORY_GB)))
    return workers


def _dask():
    try:
        import dask
        import distributed
    except ImportError:
        raise MissingExtraError(DASK_MISSING) from None
    return dask, distributed


def run_subjects(subjects: list[Subject], outroot: str, args: argparse.Namespace, bundle_id: str,
                 options: dict[str, Any], workers: int, scheduler: str | None) -> Iterator[dict[str, Any]]:
    """Rows of the subjects as they finish (in completion order)."""
    if not subjects:
        return
    call: Callable[[Subject], dict[str, Any]] = lambda s: process_subject(s.id, str(s.peaks), outroot, args,
                                                                          bundle_id, options)
    if workers == 0 and scheduler is None:
        for subject in subjects:
            yield call(subject)
        return
    dask, distributed = _dask()
    with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
                          "distributed.worker.daemon": False, "distributed.admin.tick.limit": "1h"}):
        cluster = None
        try:
            if scheduler is None:
                cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                   dashboard_address=":0", memory_limit=0, silence_logs=40)
                client = distributed.Client(cluster)
            else:
                client = distributed.Client(scheduler, timeout="30s")
        except OSError as error:
            raise CohortError(f"cannot reach the Dask scheduler {scheduler or '(local)'}: {one_line(error)}") \
                from None
        try:
            futures = {client.submit(process_subject, s.id, str(s.peaks), outroot, args, bundle_id, options,
                                     key=f"tractseg-{s.id}", pure=False): s for s in subjects}
            for future in distributed.as_completed(futures):
                subject = futures[future]
                try:
                    yield future.result()
                except Exception as error:  # KilledWorker after ALLOWED_FAILURES deaths, or a bug on the worker
                    yield {"subject": subject.id, "peaks": str(subject.peaks), "status": "failed",
                           "error": f"{type(error).__name__}: {one_line(error, 300)}", "seconds": "",
                           "peak_rss_mb": "", "slices_run": "", "worker": ""}
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
