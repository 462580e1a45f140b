"""python -m tests.fuzz.study [--cases N] [--seed S] [--bundle DIR] [--case I]: hostile studies for the study runner.

Each case builds a small random study (real synthetic peaks, S=16 bundle) with hostile parts -- odd ids (spaces,
unicode, reserved names such as ``cohort.csv``, very long names), linked subject folders, dangling links (a DataLad
file before ``get``), corrupt files, CSV lists (duplicate ids, BOM, comments, relative paths, missing files),
OUTROOT inside the study with a broad pattern, OUTROOT's own files taken by folders -- then runs
``python -m runtime.cohort --workers 0`` on it, edits things (an input replaced with ``cp -p``, a done-record or
statistics.json damaged, an output deleted, a layout switched), interrupts a run (SIGINT / SIGTERM) or starts two
at once, and runs it again. Every run must keep the study runner's contract:

* exit 0, 1, 130 or 143; never a traceback, an internal error (exit 3) or a timeout;
* exit 1 without a table written by it: exactly one "tractseg-aot: error:" line (a study-level refusal);
* every row of cohort.csv: ``done`` with the subject's complete output set and its done-record, or ``failed`` with
  a one-line error and no output file under a final name;
* no staging folder or lock left behind.

The last run of every case is a plain rerun, which must leave every good subject done.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tests.fuzz.common import LAS, LOCK_NAME, PREFIX, REPO, STAGING_PREFIX, pick, save
from tests.run_support import synthetic_peaks

DONE = ".tractseg-aot-done.json"
SHAPE = (14, 16, 13)
ODD_IDS = ["sub 01", "sub-ü1", "x" * 200, "cohort.csv", "report.html", "statistics.csv", "-rf", "a;b"]


@dataclass
class StudyCase:
    index: int
    detail: list[str] = field(default_factory=list)
    root: Path = Path()
    inputs: list[str] = field(default_factory=list)
    out: Path = Path()
    options: list[str] = field(default_factory=list)
    good: set[str] = field(default_factory=set)  # ids that must end done
    actions: list[str] = field(default_factory=list)  # what happens between the first run and the final rerun


def build(index: int, seed: int, root: Path) -> StudyCase:
    rng = np.random.default_rng([seed, index])
    case = StudyCase(index, root=root)
    study = root / "study"
    for i in range(int(rng.integers(1, 3))):
        sid = f"sub-{i + 1:02d}"
        save(study / sid / "dwi" / f"{sid}_peaks.nii.gz", synthetic_peaks(SHAPE, seed=i))
        case.good.add(sid)
    if rng.random() < 0.3:  # a linked subject folder
        save(root / "elsewhere" / "sub-07" / "dwi" / "sub-07_peaks.nii.gz", synthetic_peaks(SHAPE, seed=7))
        os.symlink(root / "elsewhere" / "sub-07", study / "sub-07")
        case.good.add("sub-07")
        case.detail.append("linked folder")
    if rng.random() < 0.3:
        (study / "sub-08" / "dwi").mkdir(parents=True)
        os.symlink(root / "annex" / "missing", study / "sub-08" / "dwi" / "sub-08_peaks.nii.gz")
        case.detail.append("dangling link")
    if rng.random() < 0.3:
        (study / "sub-09").mkdir()
        (study / "sub-09" / "sub-09_peaks.nii.gz").write_bytes(bytes(rng.integers(0, 256, 300, dtype=np.uint8)))
        case.detail.append("corrupt file")
    if rng.random() < 0.35:
        odd = pick(rng, ODD_IDS)
        save(study / odd / "peaks.nii.gz", synthetic_peaks(SHAPE, seed=5))
        case.detail.append(f"odd id {odd[:20]!r}")
    case.out = study / "derivatives" / "tractseg" if rng.random() < 0.3 else root / "out"
    case.inputs = [str(study)]
    if case.out.is_relative_to(study):
        case.options += ["--pattern", "**/*.nii.gz"]
        case.detail.append("OUTROOT inside the study, broad pattern")
    if rng.random() < 0.3:
        listing = root / "list.csv"
        files = sorted(p for p in study.glob("sub-0[1-7]/dwi/*.nii.gz"))
        rows = [f"{'x' if rng.random() < 0.2 else p.parent.parent.name},{os.path.relpath(p, root)}" for p in files]
        extra = pick(rng, ["", "# a comment", "sub-99,missing.nii.gz", ",", "\ufeff"])
        listing.write_text("subject,peaks\n" + "\n".join(rows + [extra]) + "\n")
        case.inputs = ["--list", str(listing)]
        case.detail.append(f"CSV list (+{extra!r})")
    if rng.random() < 0.15:
        (case.out / pick(rng, ["cohort.csv", "report.html"])).mkdir(parents=True)
        case.detail.append("OUTROOT file is a folder")
    case.options += [o for o, p in (("--statistics", 0.4), ("--single_output_file", 0.3)) if rng.random() < p]
    case.actions = [pick(rng, ["rerun", "replace input (cp -p)", "damage done-record", "damage statistics",
                               "delete an output", "switch layout", "SIGINT", "SIGTERM", "two at once"])]
    case.detail.append(case.actions[0])
    return case


def command(case: StudyCase, bundle: str, extra: list[str] = ()) -> list[str]:
    return [sys.executable, "-m", "runtime.cohort", *case.inputs, "-o", str(case.out), "--artifacts", bundle,
            "--workers", "0", "--quiet", *case.options, *extra]


def judge(case: StudyCase, code: int | None, err: str, table_before: bool) -> list[str]:
    problems = []
    if code not in (0, 1, 130, 143):
        problems.append(f"exit {code}")
    if "Traceback" in err or "internal error" in err:
        problems.append("traceback / internal error: " + err.strip()[-300:])
    errors = [line for line in err.splitlines() if line.startswith(PREFIX)]
    table = case.out / "cohort.csv"
    if code == 1 and not table.is_file() and len(errors) != 1:
        problems.append(f"exit 1 without a table and {len(errors)} error lines")
    if code == 1 and not table_before and table.is_file() and errors:
        problems.append("a study-level refusal wrote cohort.csv")
    if table.is_file():
        with open(table, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                problems += row_problems(case, row)
    for path in case.root.rglob("*"):
        if path.name.startswith(STAGING_PREFIX) or (path.name == LOCK_NAME and code in (0, 1)):
            problems.append(f"left behind: {path}")
    return problems


def row_problems(case: StudyCase, row: dict[str, str]) -> list[str]:
    """A done row has its complete output set and done-record; a failed one a one-line error and, under final
    names, no partial output set (a subject done by an earlier run keeps its complete set)."""
    folder = case.out / row["subject"]
    finals = [p for p in folder.rglob("*.nii.gz")] if folder.is_dir() else []
    if row["status"] == "done":
        single = "--single_output_file" in case.options
        if len(finals) != (1 if single else 72) or not (folder / DONE).is_file():
            return [f"{row['subject']}: done with {len(finals)} outputs, done-record {(folder / DONE).exists()}"]
        return []
    if not row["error"] or "\n" in row["error"]:
        return [f"{row['subject']}: failed without a one-line error"]
    if len(finals) not in (0, 1, 72):
        return [f"{row['subject']}: failed with {len(finals)} outputs (a partial set)"]
    return []


def run(case: StudyCase, bundle: str, extra: list[str] = (), interrupt: int | None = None,
        timeout: float = 300) -> tuple[int | None, str]:
    process = subprocess.Popen(command(case, bundle, extra), cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    if interrupt is not None:  # once the study holds OUTROOT's lock (its signal handlers are in place by then)
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline and not (case.out / LOCK_NAME).exists():
            time.sleep(0.02)
        time.sleep(float(np.random.default_rng(case.index).uniform(0, 1.5)))
        process.send_signal(interrupt)
    try:
        _, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return None, "timeout"
    return process.returncode, err


def act(case: StudyCase, bundle: str) -> list[str]:
    """The case's middle step; returns contract problems of any run it makes."""
    action, problems = case.actions[0], []
    done = sorted(case.out.glob(f"*/{DONE}"))
    if action == "replace input (cp -p)" and case.good:
        sid = sorted(case.good)[0]
        target = next(iter(sorted((case.root / "study" / sid).rglob("*.nii.gz"))), None)
        if target is not None and not target.is_symlink():
            save(target.with_name("new.nii.gz"), synthetic_peaks(SHAPE, seed=99), LAS)
            shutil.copy2(target.with_name("new.nii.gz"), target)
            target.with_name("new.nii.gz").unlink()
    elif action == "damage done-record" and done:
        done[0].write_text('{"format": 1, "subject": ')
    elif action == "damage statistics":
        for path in case.out.glob("*/statistics.json"):
            path.write_text(path.read_text().replace('"volume_ml": ', '"volume_ml": Infinity, "x": ', 1)[:400])
    elif action == "delete an output":
        victim = next(iter(sorted(case.out.glob("*/bundle_segmentations*"))), None)
        if victim is not None:
            shutil.rmtree(victim) if victim.is_dir() else victim.unlink()
    elif action == "switch layout":
        case.options = [o for o in case.options if o != "--single_output_file"] if \
            "--single_output_file" in case.options else case.options + ["--single_output_file"]
    elif action in ("SIGINT", "SIGTERM"):
        code, err = run(case, bundle, ["--force"], interrupt=getattr(signal, action))
        problems += judge(case, code, err, True)
    elif action == "two at once":
        first = subprocess.Popen(command(case, bundle, ["--force"]), cwd=REPO, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
        code, err = run(case, bundle, ["--force"])
        _, first_err = first.communicate(timeout=300)
        problems += judge(case, code, err, True) + judge(case, first.returncode, first_err, True)
    return problems


def fuzz_case(index: int, seed: int, bundle: str, root: Path) -> tuple[StudyCase, list[str], float]:
    started = time.perf_counter()
    case = build(index, seed, root)
    code, err = run(case, bundle)
    problems = judge(case, code, err, False)
    problems += act(case, bundle)
    table_before = (case.out / "cohort.csv").is_file()
    code, err = run(case, bundle)
    problems += judge(case, code, err, table_before)
    refused = code == 1 and len([line for line in err.splitlines() if line.startswith(PREFIX)]) == 1
    if not refused and (case.out / "cohort.csv").is_file():  # the study ran: every good subject it lists is done
        with open(case.out / "cohort.csv", newline="", encoding="utf-8") as f:
            status = {row["subject"]: row["status"] for row in csv.DictReader(f)}
        problems += [f"{sid}: {status[sid]} after the final rerun" for sid in sorted(case.good)
                     if sid in status and status[sid] != "done"]
    return case, problems, time.perf_counter() - started


def fuzz_studies(cases: int, seed: int, bundle: str, root: Path, out=sys.stdout) -> list[tuple[StudyCase, list[str]]]:
    results = []
    for index in range(cases):
        folder = root / f"case-{index:03d}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        case, problems, seconds = fuzz_case(index, seed, bundle, folder)
        print(f"{index:3d} {'FAIL' if problems else 'ok  '} {seconds:5.1f}s {'; '.join(case.detail)}"
              + "".join(f"\n      {p}" for p in problems), file=out, flush=True)
        results.append((case, problems))
    return results


def main(argv: list[str] | None = None) -> int:
    from tests.fuzz.report import default_bundle

    p = argparse.ArgumentParser(prog="python -m tests.fuzz.study", description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bundle", help="an S=16 tract_segmentation bundle (default: build or reuse the cached one)")
    p.add_argument("--root", type=Path, help="where the cases are laid out (default: a temporary folder)")
    args = p.parse_args(argv)
    import tempfile

    root = args.root or Path(tempfile.mkdtemp(prefix="tractseg-study-fuzz-"))
    results = fuzz_studies(args.cases, args.seed, args.bundle or str(default_bundle()), root)
    failed = sum(bool(problems) for _, problems in results)
    print(json.dumps({"cases": len(results), "failed": failed, "root": str(root)}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
