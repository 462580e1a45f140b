"""python -m runtime.tractometry_stats (console script tractseg-aot-stats): group statistics along the tracts,
upstream TractSeg 2.10's ``plot_tractometry_results``.

Two ways in:

* ``-i SUBJECTS_FILE -o plot.png`` -- upstream's subjects file (see :mod:`runtime.tractometry_stats.subjects_file`);
* ``--table OUTROOT/tractometry.csv --participants participants.tsv --group COLUMN|--target COLUMN -o plot.png``
  -- a study of ``runtime.cohort`` (see :mod:`runtime.tractometry_stats.study_table`).

Upstream's flags (``--mc``, ``--nperm``, ``--alpha``, ``--range``, ``--save_csv``; ``--tracking_dir`` and
``--tracking_format`` are accepted and only matter for ``--plot3D``, which is refused: it needs VTK). Ours:
``--confounds a,b``, ``--bundles A,B``, ``--seed``. As upstream, a correlation uses a fifth of ``--nperm``.

Exit status: 0 done; 1 an input that cannot be used or an output that cannot be written (one line on stderr, no
output written); 2 bad command line; 3 internal error (traceback saved).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from runtime.cli import command_parser, guarded
from runtime.cohort.records import TABLE_NAME, read_cohort_table
from runtime.cohort.report import write_study_report
from runtime.cohort.significance import write_significance
from runtime.errors import InputError

PROG = "tractseg-aot-stats"


def two_floats(text: str) -> tuple[float, float]:
    """``--range``: two numbers, lower and upper, in one argument ("0.2 0.8", as upstream; or "0.2,0.8")."""
    parts = text.replace(",", " ").split()
    try:
        low, high = (float(x) for x in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers 'lower upper', got {text!r}") from None
    if not low < high:
        raise argparse.ArgumentTypeError(f"the lower bound must be below the upper, got {text!r}")
    return low, high


def names(text: str) -> list[str]:
    items = [x.strip() for x in text.split(",")]
    if not all(items):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of names, got {text!r}")
    return items


def parser() -> argparse.ArgumentParser:
    p = command_parser(PROG, "runtime.tractometry_stats", __doc__)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("-i", metavar="subjects_file_path", dest="subjects_file",
                        help="upstream's subjects file (# tractometry_path=..., then 'subject_id group|target ...')")
    source.add_argument("--table", metavar="CSV", help="a study's long table (OUTROOT/tractometry.csv of "
                        "runtime.cohort); needs --participants and --group or --target")
    p.add_argument("-o", metavar="plot_path", dest="output_path", required=True,
                   help="output figure (png; pdf/svg by its name); tables are written beside it")
    p.add_argument("--mc", action="store_true", help="correct for multiple tract comparison")
    p.add_argument("--nperm", metavar="n", type=int, default=5000, help="Number of permutations (default: 5000)")
    p.add_argument("--alpha", metavar="a", type=float, default=0.05, help="The desired alpha level (default: 0.05)")
    p.add_argument("--plot3D", metavar="none|metric|pval", choices=["none", "metric", "pval"], default="none",
                   help="not available here (upstream renders it with VTK)")
    p.add_argument("--save_csv", action="store_true", help="save results also as csv (<plot_path>.csv)")
    p.add_argument("--tracking_dir", metavar="folder_name", default="auto", help="only used by --plot3D")
    p.add_argument("--tracking_format", metavar="tck|trk|trk_legacy", choices=["tck", "trk", "trk_legacy"],
                   default="tck", help="only used by --plot3D")
    p.add_argument("--range", "-r", metavar="'l u'", type=two_floats, default=None,
                   help="Range of metric (y-axis) to plot: lower and upper bound in one argument")
    ours = p.add_argument_group("tractseg-aot")
    ours.add_argument("--participants", metavar="TSV", help="participants table (BIDS participants.tsv) for --table")
    test = ours.add_mutually_exclusive_group()
    test.add_argument("--group", metavar="COLUMN", help="--table: two groups (0/1, or two labels coded in sorted "
                      "order); an unpaired t-test per point")
    test.add_argument("--target", metavar="COLUMN", help="--table: a number; a Pearson correlation per point")
    ours.add_argument("--confounds", metavar="A,B", type=names, help="confound columns to regress out (default: "
                      "none with --table; every column after the second of a subjects file)")
    ours.add_argument("--bundles", metavar="A,B", type=names, help="only these bundles (default: the subjects "
                      "file's '# bundles=' line, else all)")
    ours.add_argument("--seed", type=int, help="seed of the permutations (default: a fresh one, printed)")
    return p


def parse_args(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    p = parser()
    args = p.parse_args(argv)
    if args.table and not args.participants:
        p.error("--table needs --participants")
    if args.table and not (args.group or args.target):
        p.error("--table needs --group COLUMN or --target COLUMN")
    if args.subjects_file and (args.group or args.target or args.participants):
        p.error("--group, --target and --participants go with --table; with -i the subjects file says it")
    if args.nperm < 1:
        p.error(f"--nperm must be at least 1, got {args.nperm}")
    if not 0 < args.alpha < 1:
        p.error(f"--alpha must be between 0 and 1, got {args.alpha}")
    if args.seed is not None and args.seed < 0:
        p.error("--seed must not be negative")
    return p, args


def run(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    from runtime.tractometry_stats.figure import figure_format, render, require_matplotlib
    from runtime.tractometry_stats.inputs import drop_empty_bundles
    from runtime.tractometry_stats.report import check_output, write_outputs
    from runtime.tractometry_stats.stats import alpha_index, analyse

    if args.plot3D != "none":
        raise InputError("--plot3D: not available in tractseg-aot (upstream renders the 3D plots with VTK); "
                         "run upstream's plot_tractometry_results for them")
    require_matplotlib()
    output = Path(args.output_path)
    image_format = figure_format(output)
    if image_format is None:
        p.error(f"-o: matplotlib cannot write {output.suffix!r} images (use .png, .pdf or .svg)")
    check_output(output)
    print(f"Correcting for comparison of multiple tracts: {args.mc}")
    if args.subjects_file:
        from runtime.tractometry_stats.subjects_file import read_subjects_file

        study, _ = read_subjects_file(args.subjects_file, args.bundles, args.confounds)
    else:
        from runtime.tractometry_stats.study_table import read_study

        study = read_study(args.table, args.participants, args.group, args.target, args.confounds or (),
                           args.bundles)
    study, dropped = drop_empty_bundles(study)
    if dropped:
        print(f"note: {len(dropped)} bundle{'s' * (len(dropped) != 1)} all zero for every subject (not tracked), "
              f"left out: {', '.join(dropped[:8])}{', ...' if len(dropped) > 8 else ''}")
    nperm = args.nperm
    if study.kind == "group":
        print("Doing group analysis.\nNumber of subjects:")
        for code, label in enumerate(study.labels):
            named = "" if label in (str(code), f"Group {code}") else f" ({label})"
            print(f"  group {code}{named}: {int((study.y == code).sum())}")
    else:
        nperm = int(nperm / 5)
        print("Doing correlation analysis.")
        print(f"Using one fifth ({nperm}) of the number of permutations for correlation analysis (as upstream)")
        print(f"Number of subjects: {len(study.subjects)}")
    if nperm < 1 or alpha_index(args.alpha, nperm) >= nperm:
        p.error(f"--nperm {args.nperm} is too few permutations for --alpha {args.alpha}")
    if study.confound_names:
        print(f"Confounds regressed out: {', '.join(study.confound_names)}")
    seed = args.seed if args.seed is not None else int(np.random.SeedSequence().entropy % 2**32)
    print(f"Permutation seed: {seed} (--seed {seed} repeats this run)")
    result = analyse(study, nperm, args.alpha, args.mc, np.random.default_rng(seed))
    _notes(study, result)
    image = render(study, result, image_format, args.range)
    for path in write_outputs(output, image, result, args.save_csv):
        print(f"Written: {path}")
    if args.table:
        mark_study_report(Path(args.table).parent, study, result, args.group or args.target, args.alpha, output)


def mark_study_report(outroot: Path, study, result, column: str, alpha: float, figure: Path) -> None:
    """A study's own table (OUTROOT/tractometry.csv beside OUTROOT/cohort.csv): its report marks the significant
    points on each bundle's profile (:mod:`runtime.cohort.significance`)."""
    if not (outroot / TABLE_NAME).is_file():
        return
    points = {b: [int(p) + 1 for p in np.flatnonzero(result.significant[i])] for i, b in enumerate(study.bundles)}
    write_significance(outroot, study.kind, column, alpha, figure.resolve(), points)
    _, page = write_study_report(outroot, read_cohort_table(outroot / TABLE_NAME))
    print(f"Study report, significant points marked: {page}")


def _notes(study, result) -> None:
    left_out = [(b, np.nonzero(~result.included[i])[0]) for i, b in enumerate(study.bundles)]
    left_out = [(b, s) for b, s in left_out if len(s)]
    if left_out:
        shown = "; ".join(f"{b}: {', '.join(study.subjects[i] for i in s[:3])}{', ...' if len(s) > 3 else ''}"
                          for b, s in left_out[:5])
        print(f"note: all-zero profiles (upstream's Tractometry writes zeros for bundles with fewer than 5 "
              f"streamlines) left out of {len(left_out)} bundle{'s' * (len(left_out) != 1)}: {shown}"
              f"{'; ...' if len(left_out) > 5 else ''}")
    untested = [b for i, b in enumerate(study.bundles) if not result.tested[i]]
    if untested:
        print(f"note: too few subjects left to test {', '.join(untested)} (shown, not tested)")
    print("Significant points (p <= alphaFWE): " + (", ".join(
        f"{b} {int(result.significant[i].sum())}" for i, b in enumerate(study.bundles)
        if result.significant[i].any()) or "none"))


def main(argv: list[str] | None = None) -> int:
    p, args = parse_args(argv)
    return guarded(lambda: run(p, args), final=argv is None, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
