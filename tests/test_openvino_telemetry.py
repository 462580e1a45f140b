"""OpenVINO sends a usage event to Google Analytics from a forked process when it is imported (its
``openvino_telemetry``), unless told not to. The runtime imports it with the telemetry declined: opening it
forks nothing (the fork was also what made JAX warn of a deadlock during every ``python -m export``)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.run_support import REPO

pytest.importorskip("openvino", reason="the [openvino] extra is not installed")

COUNT_FORKS = """
import os, sys
forks = []
os.register_at_fork(before=lambda: forks.append(1))
os.environ.pop("CI", None)  # as on a user's machine
from runtime.network.backends.openvino_backend import import_openvino
ov = import_openvino()
import threading, time
time.sleep(1.0)  # the telemetry sender is a thread: give it time to fork
print(len(forks), "CI" in os.environ, "openvino.tools.ovc" in sys.modules)
"""


def test_opening_openvino_sends_nothing_and_forks_nothing():
    env = {k: v for k, v in __import__("os").environ.items() if k != "CI"}
    done = subprocess.run([sys.executable, "-c", COUNT_FORKS], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    forks, ci_left, ovc = done.stdout.split()
    assert ovc == "True"  # the telemetry module was imported (the test checks the real thing)
    assert forks == "0" and ci_left == "False", done.stdout
