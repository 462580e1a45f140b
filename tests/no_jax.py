"""Run Python code in a subprocess where importing jax, jaxlib, equinox, torch or export/ raises ImportError.

A sys.meta_path hook installed before anything else is imported makes the block real: tensorflow, for one,
try-imports jax when it is installed in the same venv, so grep cannot prove the runtime JAX-free.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BLOCKED = ("jax", "jaxlib", "equinox", "torch", "export", "tractseg")
REPO = Path(__file__).resolve().parent.parent

PRELUDE = f"""
import sys
class _Blocker:
    blocked = {BLOCKED!r}
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.blocked:
            raise ImportError(f"import of {{name}} is blocked: the runtime must not need it")
        return None
sys.meta_path.insert(0, _Blocker())
"""


def run_python(code: str, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    """python -c PRELUDE+code, in the repository root, with the block in place."""
    return subprocess.run([sys.executable, "-c", PRELUDE + code, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def run_module(module: str, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    """python -m module args..., with the block in place."""
    code = f"import runpy, sys; sys.argv = [{module!r}] + sys.argv[1:]; runpy.run_module({module!r}, run_name='__main__')"
    return run_python(code, *args, timeout=timeout)
