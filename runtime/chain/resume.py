"""A chain run that resumes: ``OUT/.tractseg-aot-chain.json`` records, step by step, what was started and what
finished, for which inputs (path, size, mtime of the peaks and the scalar map) and with which options.

Rerun with the same command, the chain skips every step that finished with the same inputs and options and whose
outputs are all there, as long as every step before it is skipped too (a step's inputs are the earlier steps'
outputs); it redoes the first other step and all after it. Any other existing output is refused unless
``--force``, which redoes every step. Outputs the record knows (this chain wrote them for these inputs, with
any options) are replaced when their step runs again. The study runner keeps its own per-subject done-records."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from runtime.io.atomic import write_text_atomic

RECORD_NAME = ".tractseg-aot-chain.json"
RECORD_FORMAT = 1
STEPS = ("tract_segmentation", "endings_segmentation", "TOM", "tracking", "tractometry")


def identity(path: Path | None) -> dict[str, Any] | None:
    """What identifies an input file for the record (None for an absent optional input)."""
    if path is None:
        return None
    status = os.stat(path)
    return {"path": str(Path(path).resolve()), "size": status.st_size, "mtime_ns": status.st_mtime_ns}


class ChainRecord:
    """The record of one output folder for one set of inputs (``key``); a record made for other inputs is
    ignored (and replaced by the first step that runs)."""

    def __init__(self, outdir: Path, key: dict[str, Any], ignore: bool = False):
        self.path = outdir / RECORD_NAME
        self.key = key
        self.steps: dict[str, dict[str, Any]] = {}
        if not ignore:
            try:
                stored = json.loads(self.path.read_text())
            except (OSError, ValueError):
                stored = None
            if isinstance(stored, dict) and stored.get("format") == RECORD_FORMAT and stored.get("key") == key:
                self.steps = dict(stored.get("steps") or {})

    def state(self, step: str, options: dict[str, Any]) -> str | None:
        """``done`` (finished with these options, every output present), ``started`` (begun with these options
        and not finished) or None."""
        entry = self.steps.get(step)
        if not isinstance(entry, dict) or entry.get("options") != json.loads(json.dumps(options, default=str)):
            return None
        if entry.get("state") == "done":
            outputs = entry.get("outputs") or []
            return "done" if all((self.path.parent / name).is_file() for name in outputs) else "started"
        return "started" if entry.get("state") == "started" else None

    def known(self, step: str) -> bool:
        """The step's outputs were written by this chain for these inputs (with whatever options)."""
        return step in self.steps

    def mark(self, step: str, options: dict[str, Any], state: str, outputs: list[Path] = ()) -> None:
        """Record ``step`` as started or done (written atomically, before a step's first output and after its
        last)."""
        root = self.path.parent
        self.steps[step] = {"options": options, "state": state,
                            "outputs": sorted(Path(p).relative_to(root).as_posix() for p in outputs)}
        root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path, json.dumps({"format": RECORD_FORMAT, "key": self.key, "steps": self.steps},
                                                indent=1, default=str) + "\n")
