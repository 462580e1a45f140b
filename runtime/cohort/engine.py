"""Where subjects run: in this process (``--workers 0``), on an embedded Dask ``LocalCluster`` of worker processes
(the default), or on an existing Dask cluster (``--scheduler ADDRESS``). Dask (``distributed``) is the ``[cohort]``
extra, imported only here.

Default worker rule (:func:`default_threads`, :func:`default_workers`): backend threads per worker = the cores,
up to 8; workers = cores // threads (so one on a 2-core node), fewer when memory is short (:data:`WORKER_MEMORY_GB`
per worker). Measured on a 2-core AMD EPYC (AVX2), 4 HCP-size subjects, OpenVINO (benchmarks/README.md, "Cohort
throughput"): one worker x 2 threads ran the study in 758 s, two workers x 1 thread in 1007 s (a 1-thread
subject took ~500 s, a 2-thread one ~190 s), so threads beat processes here; the cap of 8 threads is not
measured (a larger node may do better with several workers: set --workers / --threads-per-worker).

Subjects are submitted in a window (:func:`submit_window`), not all at once: the driver held every future and the
scheduler every task, 18.5 KB a subject (~1.9 GB at 100,000; benchmarks/README.md, "Cohort scale").
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from runtime.cohort.records import CohortRow
from runtime.cohort.subjects import Subject
from runtime.cohort.worker import process_subject
from runtime.errors import MissingExtraError, TractSegError, one_line
from runtime.chain import ChainOptions
from runtime.options import RunOptions

DASK_MISSING = "runtime.cohort needs Dask for worker processes: pip install 'tractseg-aot[cohort]' (or --workers 0)"
WORKER_MEMORY_GB = 2.5  # peak RSS of one worker, 72 bundles, HCP size (measured 1.87-1.91 GB) plus margin
# the same from a raw DWI (--raw_diffusion_input): HCP-size single-shell series (146x174x146x108), peaks then
# segmentation, measured 3.70 GB with the mrtrix engine and 3.18 GB with dipy (benchmarks/README.md), plus margin
WORKER_MEMORY_RAW_GB = 5.0
IN_FLIGHT_PER_WORKER, IN_FLIGHT_MIN = 4, 64  # subjects submitted ahead of the workers (submit_window)
ALLOWED_FAILURES = 2  # a subject whose worker died this many times more is reported failed
# Dask's own housekeeping, slowed for subjects that run minutes: by default the event-loop health check wakes
# every server every 20 ms, the worker samples its threads' stacks every 10 ms (the dashboard's profile) and the
# system monitor polls psutil every 500 ms. On a 2-core AMD EPYC an embedded cluster with one worker running a
# sleeping task burned 4.0 CPU-s in 30 s (driver 1.8, worker 2.2) by default, 0.5 with these: CPU that the
# backend's threads, which synchronise at every layer, otherwise lose. Workers of a LocalCluster inherit it;
# a --scheduler cluster's workers keep their own configuration (README: running on a cluster).
# The scheduler (in the driver's process for an embedded cluster) also keeps logs of every transition and event,
# bounded at 1,000-10,000 entries each: kept at 200, so a long study's driver does not grow towards those bounds.
QUIET_DASK = {"distributed.admin.tick.interval": "1s", "distributed.admin.tick.limit": "1h",
              "distributed.worker.profile.enabled": False, "distributed.admin.system-monitor.interval": "5s",
              "distributed.admin.log-length": 200, "distributed.admin.low-level-log-length": 200}


class CohortError(TractSegError):
    """A study-level problem (no Dask, an unreachable scheduler)."""


def default_threads(cores: int) -> int:
    """Backend threads per worker when --threads-per-worker is not given: every core, at most 8."""
    return max(1, min(cores, 8))


def default_workers(cores: int, memory_gb: float | None, threads_per_worker: int = 1,
                    raw_diffusion: bool = False) -> int:
    """Workers for this host: cores // threads, at least 1, at most what memory holds (a raw-DWI subject needs
    more: :data:`WORKER_MEMORY_RAW_GB`)."""
    workers = max(1, cores // max(1, threads_per_worker))
    if memory_gb is not None:
        per_worker = WORKER_MEMORY_RAW_GB if raw_diffusion else WORKER_MEMORY_GB
        workers = max(1, min(workers, math.floor(memory_gb / per_worker)))
    return workers


def _dask():
    try:
        import dask
        import distributed
    except ImportError:
        raise MissingExtraError(DASK_MISSING) from None
    return dask, distributed


def window_size(client: Any, workers: int) -> int:
    """Subjects in flight at once: IN_FLIGHT_PER_WORKER per worker (the cluster's count, when it has more), at
    least IN_FLIGHT_MIN: enough that no worker waits for the driver, few enough that memory stays flat.
    ``client.nthreads()`` lists every worker; ``scheduler_info()`` lists only 5 in the Dask releases between
    dask/distributed#9045 and #9308 (2025-2026), which our `distributed>=2024.1` allows."""
    return max(IN_FLIGHT_MIN, IN_FLIGHT_PER_WORKER * max(workers, len(client.nthreads())))


def submit_window(submit: Callable[[Subject], Any], as_completed: Any, subjects: list[Subject], window: int,
                  ) -> Iterator[tuple[Any, Subject]]:
    """(future, subject) in completion order, with at most ``window`` subjects submitted and unfinished at any
    time: once a subject finishes its future is dropped (so the scheduler forgets the task) and the next one is
    submitted. The driver's and the scheduler's memory then stay flat however large the study."""
    queue = iter(subjects)
    pending = {submit(s): s for s in itertools.islice(queue, window)}
    completed = as_completed(list(pending))
    for future in completed:
        subject = pending.pop(future)
        following = next(queue, None)
        if following is not None:
            new = submit(following)
            pending[new] = following
            completed.add(new)
        yield future, subject


def run_subjects(subjects: list[Subject], outroot: str, per_subject: RunOptions | ChainOptions, bundle_id: str,
                 workers: int, scheduler: str | None) -> Iterator[CohortRow]:
    """Rows of the subjects as they finish (in completion order); ``per_subject`` a ChainOptions: the whole
    chain."""
    if not subjects:
        return
    if workers == 0 and scheduler is None:
        for subject in subjects:
            # the subject's network / bundle bars, in this process
            yield process_subject(subject.id, str(subject.peaks), outroot, per_subject, bundle_id, subject.gradients,
                                  progress=not per_subject.quiet, problem=subject.problem)
        return
    dask, distributed = _dask()
    with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
                          "distributed.worker.daemon": False, **QUIET_DASK}):
        cluster = None
        try:
            if scheduler is None:
                # silence_logs=CRITICAL: a worker's own error logs (a task cut off when an interrupted study closes
                # the cluster) are not for the user; every subject's failure is reported in cohort.csv instead
                with workers_ignore_sigint():
                    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                       dashboard_address=":0", memory_limit=0, silence_logs=50)
                client = distributed.Client(cluster)
            else:
                client = distributed.Client(scheduler, timeout="30s")
        except (OSError, ValueError, TypeError) as error:  # ValueError: "missing port number" and the like
            if cluster is not None:
                cluster.close()
            raise CohortError(f"cannot reach the Dask scheduler {scheduler or '(local)'}: {one_line(error)}") \
                from None
        try:
            submit = lambda s: client.submit(process_subject, s.id, str(s.peaks), outroot, per_subject, bundle_id,  # noqa: E731
                                             s.gradients, problem=s.problem, key=f"tractseg-{s.id}", pure=False)
            for future, subject in submit_window(submit, distributed.as_completed, subjects,
                                                 window_size(client, workers)):
                try:
                    yield future.result()
                except Exception as error:  # KilledWorker after ALLOWED_FAILURES deaths, or a bug on the worker
                    yield CohortRow(subject.id, str(subject.peaks), "failed",
                                    f"{type(error).__name__}: {one_line(error, 300)}")
        finally:
            quiet_close(client, cluster)


@contextmanager
def workers_ignore_sigint() -> Iterator[None]:
    """Worker processes started in the block ignore SIGINT (a disposition a spawned Python keeps): Ctrl-C in a
    terminal signals the whole process group, and the driver alone decides what an interrupt means (it closes
    the cluster). Without this each worker printed its own KeyboardInterrupt traceback."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def quiet_close(client: Any, cluster: Any) -> None:
    """Close the client and the embedded cluster without Dask's own complaints about cancelled work (an
    interrupted study printed "Couldn't gather keys" and worker tracebacks)."""
    import logging

    for name in ("distributed", "distributed.client", "distributed.worker", "distributed.nanny",
                 "distributed.scheduler", "distributed.core"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        client.close()
    finally:
        if cluster is not None:
            cluster.close()
