"""The CLI's contract (the package docstring) checked on a case's exit status, streams and folder."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import nibabel as nib

from tests.fuzz.common import LOCK_NAME, PREFIX, STAGING_PREFIX, WARNING, Case, Outcome
from tests.fuzz.running import run_in_process, run_subprocess, snapshot


def expected_outputs(case: Case) -> set[str]:
    from runtime.models.bundles import TRACTQUERIER_BUNDLES
    from runtime.io.nifti_io import output_paths

    files = output_paths("tract_segmentation", TRACTQUERIER_BUNDLES, case.single_file, False, case.outdir)
    names = {str(p.relative_to(case.outdir)) for p in files}
    if case.statistics:
        names.add("statistics.json")
    if case.report is not None and case.outdir in case.report.parents:
        names.add(str(case.report.relative_to(case.outdir)))
    return names


def final_names(outdir: Path) -> set[str]:
    return {k for k, (kind, _, _) in snapshot(outdir).items()
            if kind != 0o04 and not k.startswith(STAGING_PREFIX) and k != LOCK_NAME}


def judge(case: Case, code: int | None, out: str, err: str, before: dict, after: dict) -> tuple[list[str], str]:
    """The contract (the package docstring): the violations, and a short note on what happened."""
    violations = []
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(PREFIX)]
    if "Traceback" in err or "Traceback" in out:
        violations.append("traceback")
    if code is None:
        return violations + ["timeout"], "timeout"
    if code == 3:
        violations.append("internal error (exit 3)")
    if code == -1000:
        violations.append("exception escaped runtime.run.main")
    changed = sorted(set(before.items()) ^ set(after.items()))
    changed_names = sorted({name for name, _ in changed})
    note = ""
    if code == 0:
        note = "ok"
        if errors:
            violations.append(f"error line on success: {errors[0]}")
        stray = [line for line in lines if not line.startswith(WARNING)]
        if stray:
            violations.append(f"stray stderr on success: {stray[:2]}")
        if case.outdir is not None:
            names = final_names(case.outdir)
            want = expected_outputs(case)
            there = {str((case.root / k).relative_to(case.outdir)) for k in before
                     if case.outdir in (case.root / k).parents}  # e.g. the input, when -o is its folder
            missing, extra = want - names, names - want - there
            if missing or extra:
                violations.append(f"output set incomplete or extra: missing {sorted(missing)[:3]}, extra "
                                  f"{sorted(extra)[:3]}")
            leftovers = [n for n in os.listdir(case.outdir) if n.startswith(STAGING_PREFIX) or n == LOCK_NAME]
            if leftovers:
                violations.append(f"left behind: {leftovers}")
            for name in sorted(want)[:3]:
                if name.endswith(".nii.gz"):
                    try:
                        nib.load(case.outdir / name).header.get_data_shape()
                    except Exception as error:  # noqa: BLE001
                        violations.append(f"{name} unreadable: {error}")
    elif code == 1:
        note = errors[0][len(PREFIX):] if errors else ""
        if len(errors) != 1:
            violations.append(f"{len(errors)} error lines")
        stray = [line for line in lines if not line.startswith(PREFIX) and not line.startswith(WARNING)]
        if stray:
            violations.append(f"stray stderr: {stray[:3]}")
        if changed_names:
            violations.append(f"files written or changed on a refusal: {changed_names[:4]}")
    elif code == 2 and case.cmdline_error:
        usage_errors = [line for line in lines if ": error: " in line]
        note = usage_errors[-1] if usage_errors else ""
        if len(usage_errors) != 1:
            violations.append(f"usage error lines: {usage_errors}")
        if changed_names:
            violations.append(f"files written on a command-line error: {changed_names[:4]}")
    elif case.signal in (signal.SIGINT, signal.SIGTERM) and code == (130 if case.signal == signal.SIGINT else 143):
        word = "interrupted" if case.signal == signal.SIGINT else "terminated"
        said = [line for line in lines if not line.startswith(WARNING)]
        note = said[0] if said else ""
        if said == [f"tractseg-aot: {word}, no outputs written"]:
            if changed_names:
                violations.append(f"files left after {word}: {changed_names[:4]}")
        elif len(said) == 1 and said[0].startswith(f"tractseg-aot: {word}, after the outputs under"):
            if final_names(case.outdir) != expected_outputs(case):  # held back until the commit: complete set
                violations.append("signal after the commit, but the output set is incomplete")
        else:
            violations.append(f"{word}: expected one line, got {said}")
    elif case.signal == signal.SIGKILL and code == -signal.SIGKILL:
        names = final_names(case.outdir)
        note = "killed"
        if names and names != expected_outputs(case):
            violations.append(f"SIGKILL left a partial output set: {sorted(names)[:3]}")
        if not names:  # the next run cleans the staging folder and succeeds
            again = Case(index=case.index, kind=case.kind, detail="rerun", root=case.root,
                         argv=[a for a in case.argv], outdir=case.outdir)
            rerun_code, _, rerun_err = run_in_process(again)
            if rerun_code != 0 or final_names(case.outdir) != expected_outputs(again) or \
                    [n for n in os.listdir(case.outdir) if n.startswith(STAGING_PREFIX) or n == LOCK_NAME]:
                violations.append(f"rerun after SIGKILL failed ({rerun_code}): {rerun_err.strip()[-200:]}")
            else:
                note = "killed; rerun ok"
    elif case.ulimit_kb and code != 0 and "tractseg-aot:" not in err:
        note = "python could not start under this limit"  # not the runtime's to judge
    else:
        violations.append(f"unexpected exit status {code}")
    return violations, note


def run_case(case: Case) -> Outcome:
    before = snapshot(case.root)
    started = time.perf_counter()
    if case.mode == "inprocess":
        code, out, err = run_in_process(case)
    else:
        code, out, err = run_subprocess(case)
    seconds = time.perf_counter() - started
    after = snapshot(case.root)
    if case.kind == "options" and code == 0:
        before = after  # a successful run writes; judged by the output set
    violations, note = judge(case, code, out, err, before, after)
    return Outcome(code, out, err, seconds, violations, note)
