"""The fuzz run: the cases in their folders, the table as they go, the summary, and the command line."""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests.fuzz.common import REPO, Case, Outcome
from tests.fuzz.contract import run_case
from tests.fuzz.generate import make_case


def default_bundle() -> str:
    from tests.run_support import SMALL_BATCH, SMALL_SIZE, build_bundle

    cache = Path(os.environ.get("TRACTSEG_AOT_TEST_BUNDLES") or REPO / ".pytest_cache" / "d" / "tractseg-aot-bundles")
    cache.mkdir(parents=True, exist_ok=True)
    return str(build_bundle(cache, size=SMALL_SIZE, batch_size=SMALL_BATCH))


def fuzz(cases: int = 80, seed: int = 0, bundle: str | None = None, only: int | None = None,
         root: Path | None = None, keep: bool = False, out=None) -> list[tuple[Case, Outcome]]:
    """Run the cases (or case ``only``) in folders under ``root`` (default: a new temporary folder); returns them
    with their outcomes (a violation is in ``outcome.violations``). A passing case's folder is removed unless
    ``keep``; a failing one's is kept, and named."""
    out = out or sys.stdout
    bundle = bundle or default_bundle()
    made = root is None
    root = Path(root) if root else Path(tempfile.mkdtemp(prefix="tractseg-aot-fuzz-"))
    root.mkdir(parents=True, exist_ok=True)
    keep = keep or only is not None
    results = []
    print(f"{'case':>4}  {'kind':<9} {'mode':<10} {'exit':>5} {'s':>6}  detail -> outcome", file=out)
    for index in [only] if only is not None else range(cases):
        try:
            case = make_case(seed, index, root, bundle)
        except Exception as error:  # a bug of this fuzzer: reported as a violation, the run goes on
            case = Case(index=index, kind="generator", detail=f"{type(error).__name__}: {error}"[:200], root=root)
            results.append((case, Outcome(None, "", "", 0.0, [f"case generator failed: {case.detail}"])))
            print(f"{index:>4}  generator error: {case.detail}", file=out, flush=True)
            continue
        outcome = run_case(case)
        results.append((case, outcome))
        flag = "  VIOLATION: " + "; ".join(outcome.violations) if outcome.violations else ""
        print(f"{index:>4}  {case.kind:<9} {case.mode:<10} {str(outcome.code):>5} {outcome.seconds:6.2f}  "
              f"{case.detail[:60]!s} -> {outcome.note[:110]}{flag}", file=out, flush=True)
        if outcome.violations:
            print(f"      folder: {case.root}\n      argv: {shlex.join(case.argv)}\n"
                  f"      stderr: {outcome.err.strip()[-1500:]}", file=out, flush=True)
        elif not keep:
            shutil.rmtree(case.root, ignore_errors=True)
    if made and not keep and not any(o.violations for _, o in results):
        shutil.rmtree(root, ignore_errors=True)
    elif keep or any(o.violations for _, o in results):
        print(f"case folders kept under {root}", file=out)
    return results


def summary(results: list[tuple[Case, Outcome]]) -> str:
    codes: dict[str, int] = {}
    for _, outcome in results:
        codes[str(outcome.code)] = codes.get(str(outcome.code), 0) + 1
    bad = [case.index for case, outcome in results if outcome.violations]
    total = sum(o.seconds for _, o in results)
    return (f"{len(results)} cases in {total:.1f} s; exit status counts {dict(sorted(codes.items()))}; "
            f"{len(bad)} violation(s){': cases ' + ', '.join(map(str, bad)) if bad else ''}")


def main(argv: list[str] | None = None) -> int:
    import tests.fuzz

    p = argparse.ArgumentParser(prog="python -m tests.fuzz", description=tests.fuzz.__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=80)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bundle", help="an S=16 tract_segmentation bundle (default: built into the pytest cache)")
    p.add_argument("--case", type=int, dest="only", help="run this one case (of --seed) and keep its folder")
    p.add_argument("--keep", type=Path, help="keep every case's folder under this directory")
    args = p.parse_args(argv)
    if args.cases < 1:
        p.error("--cases must be at least 1")
    started = time.perf_counter()
    results = fuzz(args.cases, args.seed, args.bundle, args.only, root=args.keep, keep=args.keep is not None)
    print(summary(results) + f" (wall {time.perf_counter() - started:.1f} s)")
    return 1 if any(outcome.violations for _, outcome in results) else 0
