"""python -m tests.fuzz [--cases N] [--seed S] [--bundle DIR] [--case I] [--keep DIR]: hostile runs of the CLI.

Generates random hostile cases -- corrupt or truncated gzip, random header fields, data types (complex, RGB, int,
scaled int), shapes (0, 1, 3D/5D, huge header dims, slabs), affines (NaN, singular, permuted, oblique, flipped),
values (inf, NaN, near float32 max, subnormal, all zero), manifest mutations (deleted, retyped, out-of-range
fields, paths leaving the bundle, broken JSON), path problems (empty, a folder for a file, devices, FIFOs, symbolic
link loops, --report on the input or an output, unwritable places), option mixes, signals (SIGINT, SIGTERM,
SIGKILL while the run writes) and ``ulimit -v`` -- and runs ``python -m runtime.run`` on each, asserting the CLI's
contract:

* exit 0 with the complete output set (every file, nothing else, no staging folder or lock left), or
* exit 1 with exactly one "tractseg-aot: error:" line (warnings "tractseg-aot: warning: ..." allowed) and no file
  written or changed anywhere in the case's folder, or
* exit 2 with argparse's one usage error, for a case that is a command-line error (an empty path, --nr_cpus 0), or
* 130 / 143 with one "interrupted" / "terminated" line and nothing written, for SIGINT / SIGTERM; for SIGKILL no
  file under a final name, and the next run on that folder succeeds;

never a traceback, never exit 3 (internal error), never a timeout. Most cases run in this process through
``runtime.run.main`` (file descriptors 1 and 2 redirected, so a backend's C++ logging to stderr is seen too);
signals, ``ulimit`` and a few random others run in a subprocess. Prints a table (case, outcome, seconds) and
exits 1 on any violation. ``--case I`` reruns one case (same seed) and keeps its folder.
"""
from __future__ import annotations

from tests.fuzz.common import (LAS, LOCK_NAME, PREFIX, REPO, STAGING_PREFIX, TIMEOUT_S, WARNING, Case, CaseTimeout,
                               Outcome)
from tests.fuzz.contract import expected_outputs, final_names, judge, run_case
from tests.fuzz.generate import BUILDERS, make_case
from tests.fuzz.report import default_bundle, fuzz, main, summary
from tests.fuzz.running import captured_fds, run_in_process, run_subprocess, snapshot

__all__ = ["BUILDERS", "LAS", "LOCK_NAME", "PREFIX", "REPO", "STAGING_PREFIX", "TIMEOUT_S", "WARNING", "Case",
           "CaseTimeout", "Outcome", "captured_fds", "default_bundle", "expected_outputs", "final_names", "fuzz",
           "judge", "main", "make_case", "run_case", "run_in_process", "run_subprocess", "snapshot", "summary"]
