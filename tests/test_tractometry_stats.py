"""runtime.tractometry_stats (upstream's ``plot_tractometry_results``): per-point statistics, p-values, alphaFWE
and significant points against upstream TractSeg 2.10's own functions on the same data (its permutations replayed);
alphaFWE's spread over seeds; the study-table way in end to end on real files with a planted effect; all-zero
profiles left out; hostile inputs (one line, exit 1, nothing written) and bad command lines (exit 2)."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.tractometry_stats import synthetic_profiles, upstream_analysis, upstream_permutations
from runtime.tractometry.table import TRACTOMETRY_BUNDLES
from runtime.tractometry_stats.__main__ import main
from runtime.tractometry_stats.inputs import Study
from runtime.tractometry_stats.stats import analyse

REPO = Path(__file__).resolve().parent.parent
BUNDLES = ["AF_left", "CST_right", "UF_left"]


def _study(values, y, kind, confounds=None, bundles=None) -> Study:
    confounds = np.empty((len(y), 0)) if confounds is None else confounds
    names = tuple(f"c{i}" for i in range(confounds.shape[1]))
    return Study(Path("synthetic"), kind, tuple(f"s{i}" for i in range(len(y))), y, names, confounds,
                 tuple(bundles or [f"B{b}" for b in range(values.shape[0])]), values)


def _data(kind: str, n: int = 14, nb: int = 2, npoints: int = 12, seed: int = 3):
    y = np.repeat([0.0, 1.0], [n // 2, n - n // 2])  # group 0 first: upstream's data order, so replays match
    z = y if kind == "group" else np.random.default_rng(seed + 1).normal(size=n)
    values = synthetic_profiles(nb, npoints, n, seed=seed, effect=0.06, where=(0, 3, 8), groups=y)
    if kind == "correlation":
        values[0, 3:8] += 0.03 * z
    confounds = np.random.default_rng(seed + 2).normal(size=(n, 2))
    values += 0.02 * confounds[:, 0]  # a confound that matters
    return values, z, confounds


def _run(argv, capsys) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def _write_subjects_file(root: Path, values: np.ndarray, y, columns: dict[str, list], bundles=None,
                         target: bool = False, extra_lines: tuple[str, ...] = ()) -> Path:
    """Upstream's layout: root/<subject>/Tractometry.csv (every tractometry bundle, as upstream writes it) and
    root/subjects.txt."""
    full = np.zeros((len(TRACTOMETRY_BUNDLES), values.shape[1], values.shape[2]))
    for b, name in enumerate(bundles or BUNDLES[:values.shape[0]]):
        full[TRACTOMETRY_BUNDLES.index(name)] = values[b]
    header = ["subject_id", "target" if target else "group", *columns]
    lines = [f"# tractometry_path={root}/SUBJECT_ID/Tractometry.csv", *extra_lines, " ".join(header)]
    for s in range(values.shape[2]):
        subject = f"s{s:02d}"
        (root / subject).mkdir(parents=True, exist_ok=True)
        np.savetxt(root / subject / "Tractometry.csv", full[:, :, s].T, delimiter=";",
                   header=";".join(TRACTOMETRY_BUNDLES), comments="")
        yv = f"{y[s]:.17g}" if target else str(int(y[s]))
        lines.append(" ".join([subject, yv, *(str(c[s]) for c in columns.values())]))
    path = root / "subjects.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def _write_study(root: Path, values: np.ndarray, ids: list[str], bundles=BUNDLES) -> Path:
    """OUTROOT/tractometry.csv in runtime.cohort's long layout (subject,bundle,point,value; repr floats)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "tractometry.csv"
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(("subject", "bundle", "point", "value"))
        for s, subject in enumerate(ids):
            for b, bundle in enumerate(bundles[:values.shape[0]]):
                writer.writerows((subject, bundle, p + 1, repr(float(values[b, p, s])))
                                 for p in range(values.shape[1]))
    return path


def _write_participants(path: Path, columns: dict[str, list]) -> Path:
    names = list(columns)
    rows = ["\t".join(names)] + ["\t".join(str(columns[c][i]) for c in names) for i in range(len(columns[names[0]]))]
    path.write_text("\n".join(rows) + "\n")
    return path


def _run_blocked(blocked: tuple[str, ...], argv) -> subprocess.CompletedProcess:
    """The command in a fresh Python where importing any of ``blocked`` raises ImportError."""
    code = ("import sys\nclass B:\n    def find_spec(self, name, path=None, target=None):\n"
            f"        if name.split('.')[0] in {blocked!r}:\n            raise ImportError(name)\n"
            "sys.meta_path.insert(0, B())\nfrom runtime.tractometry_stats.__main__ import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    return subprocess.run([sys.executable, "-c", code, *map(str, argv)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


NOT_NEEDED = ("tractseg", "torch", "jax", "pandas", "seaborn", "sklearn", "dipy")


def _segments(path: Path) -> dict[str, np.ndarray]:
    with open(path) as stream:
        rows = list(csv.DictReader(stream))
    out = {}
    for bundle in dict.fromkeys(r["bundle"] for r in rows):
        mine = [r for r in rows if r["bundle"] == bundle]
        out[bundle] = np.array([[float(r["statistic"]), float(r["p"]), int(r["significant"])] for r in mine])
    return out


# (1) per point: t / r, p, alphaFWE and significance equal upstream's own functions, its permutations replayed
@pytest.mark.parametrize("kind", ["group", "correlation"])
@pytest.mark.parametrize("mc", [False, True])
@pytest.mark.parametrize("with_confounds", [False, True])
def test_equals_upstream_functions(kind, mc, with_confounds):
    pytest.importorskip("sklearn", reason="upstream's unconfound needs scikit-learn (the [parity] extra)")
    values, z, confounds = _data(kind)
    confounds = confounds if with_confounds else np.empty((len(z), 0))
    nperm, n, nb = (100 if kind == "group" else 40), len(z), values.shape[0]
    theirs = upstream_analysis(values, z, confounds, kind, mc, nperm, seed=7)
    replay = upstream_permutations(7, n, nperm * (1 if mc else nb), kind == "correlation")
    if mc:
        ours = analyse(_study(values, z, kind, confounds), nperm, 0.05, True, None, permutations=replay)
        stat, p, alpha_fwe, significant = ours.stat, ours.p, ours.alpha_fwe, ours.significant
    else:  # upstream draws each bundle's permutations in turn from one stream
        parts = [analyse(_study(values[b:b + 1], z, kind, confounds), nperm, 0.05, False, None,
                         permutations=replay[b * nperm:(b + 1) * nperm]) for b in range(nb)]
        stat, p = np.concatenate([r.stat for r in parts]), np.concatenate([r.p for r in parts])
        alpha_fwe = np.concatenate([r.alpha_fwe for r in parts])
        significant = np.concatenate([r.significant for r in parts])
    np.testing.assert_allclose(stat, theirs["stat"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(p, theirs["p"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(alpha_fwe, theirs["alpha_fwe"], rtol=1e-9, atol=0)
    np.testing.assert_array_equal(significant, theirs["significant"])
    assert significant[0].any() and np.isin(np.nonzero(significant[0])[0], range(3, 8)).all()


@pytest.mark.parametrize("kind", ["group", "correlation"])
def test_cli_subjects_file_equals_upstream(tmp_path, capsys, kind):
    """Upstream's way in, through the files: the per-segment CSV holds upstream's t (r) and p; the --save_csv
    table has upstream's layout."""
    pytest.importorskip("sklearn", reason="upstream's unconfound needs scikit-learn (the [parity] extra)")
    values, y, confounds = _data(kind, n=16, nb=3, npoints=20)
    subjects = _write_subjects_file(tmp_path, values, y, {"Age": confounds[:, 0].round(3).tolist(),
                                                          "Sex": (np.arange(16) % 2).tolist()},
                                    target=kind == "correlation", extra_lines=("# bundles=" + " ".join(BUNDLES),))
    out = tmp_path / "out" / "plot.png"
    code, stdout, err = _run(["-i", subjects, "-o", out, "--save_csv", "--nperm", "200", "--seed", "1"], capsys)
    assert code == 0, err
    assert "Using 3 manually specified bundles." in stdout
    assert ("Doing group analysis." if kind == "group" else "one fifth (40)") in stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    c = np.column_stack([np.round(confounds[:, 0], 3), np.arange(16) % 2])
    theirs = upstream_analysis(values, y, c, kind, False, 10)
    segments = _segments(Path(f"{out}.segments.csv"))
    assert list(segments) == BUNDLES
    for b, bundle in enumerate(BUNDLES):
        np.testing.assert_allclose(segments[bundle][:, 0], theirs["stat"][b], rtol=0, atol=1e-6)
        np.testing.assert_allclose(segments[bundle][:, 1], theirs["p"][b], rtol=0, atol=1e-6)
    summary = Path(f"{out}.csv").read_text().splitlines()
    assert summary[0] == ",bundle,alphaFWE,min_pvalue,t_value" and summary[1].startswith("0,AF_left,")
    assert len(summary) == 4


# (2) alphaFWE: ours lies inside the spread of upstream's over seeds
@pytest.mark.parametrize("kind,nperm", [("group", 100), ("correlation", 50)])
def test_alpha_fwe_within_upstream_spread(kind, nperm):
    values, z, _ = _data(kind, n=12, nb=1, npoints=15, seed=5)
    none = np.empty((len(z), 0))
    theirs = [upstream_analysis(values, z, none, kind, False, nperm, seed=s)["alpha_fwe"][0] for s in range(10)]
    ours = [analyse(_study(values, z, kind), nperm, 0.05, False, np.random.default_rng(s)).alpha_fwe[0]
            for s in range(10)]
    low, high = min(theirs), max(theirs)
    assert low <= np.median(ours) <= high, (ours, theirs)
    assert all(0.5 * low <= a <= 2 * high for a in ours), (ours, theirs)


def test_seed_repeats_and_upstream_index():
    values, z, _ = _data("group")
    study = _study(values, z, "group")
    a, b = (analyse(study, 200, 0.05, False, np.random.default_rng(3)) for _ in range(2))
    np.testing.assert_array_equal(a.alpha_fwe, b.alpha_fwe)
    c = analyse(study, 200, 0.05, False, np.random.default_rng(4))
    assert not np.array_equal(a.alpha_fwe, c.alpha_fwe)


# (3) the study table way in, end to end (no upstream, pandas, sklearn or dipy importable): a planted group effect
# (and a planted correlation) found where planted, nowhere else
def test_study_table_end_to_end(tmp_path):
    n, npoints = 24, 40
    rng = np.random.default_rng(11)
    patient = np.array([0, 1] * (n // 2), dtype=float)
    age = rng.uniform(20, 70, n).round(1)
    sex = np.where(rng.random(n) < 0.5, "M", "F")
    score = rng.normal(size=n)
    values = synthetic_profiles(3, npoints, n, seed=12, effect=0.08, where=(0, 10, 20), groups=patient)
    values[1, 25:35] += 0.05 * score  # bundle 1 correlates with the score
    values += 0.002 * (age - 45)  # an age effect everywhere
    ids = [f"{i:02d}" for i in range(n)]  # the study's ids without "sub-", the participants' with it
    table = _write_study(tmp_path / "study", np.concatenate([values, values[..., :1]], axis=2), ids + ["extra"])
    participants = _write_participants(tmp_path / "participants.tsv", {
        "participant_id": [f"sub-{i}" for i in ids], "age": age.tolist(), "sex": sex.tolist(),
        "diagnosis": ["patient" if p else "control" for p in patient], "score": score.tolist()})
    out = tmp_path / "stats" / "group.png"
    common = ["--table", table, "--participants", participants, "--confounds", "age,sex", "--nperm", "1000",
              "--seed", "0"]
    done = _run_blocked(NOT_NEEDED, [*common, "--group", "diagnosis", "-o", out])
    assert done.returncode == 0, done.stderr
    assert "control -> 0, patient -> 1" in done.stdout and "F -> 0, M -> 1" in done.stdout
    assert "1 subject of" in done.stdout and "left out" in done.stdout  # "extra" is not a participant
    segments = _segments(Path(f"{out}.segments.csv"))
    hits = np.nonzero(segments["AF_left"][:, 2])[0] + 1
    assert len(hits) >= 5 and np.isin(hits, range(11, 21)).all(), hits  # point = index + 1
    assert not segments["CST_right"][:, 2].any() and not segments["UF_left"][:, 2].any()
    assert (segments["AF_left"][10:20, 0] < 0).all()  # t = control - patient, patients higher
    out2 = tmp_path / "stats" / "score.png"
    done = _run_blocked(NOT_NEEDED, [*common, "--target", "score", "--mc", "-o", out2])
    assert done.returncode == 0, done.stderr
    assert "one fifth (200)" in done.stdout
    segments = _segments(Path(f"{out2}.segments.csv"))
    hits = np.nonzero(segments["CST_right"][:, 2])[0] + 1
    assert len(hits) >= 3 and np.isin(hits, range(26, 36)).all(), hits
    assert not segments["AF_left"][:, 2].any() and not segments["UF_left"][:, 2].any()
    assert (segments["CST_right"][25:35, 0] > 0).all()


# (5) all-zero profiles are left out of their bundle, with one note
def test_all_zero_profiles_left_out(tmp_path, capsys):
    values, y, _ = _data("group", n=16, nb=2, npoints=12)
    values[1, :, [2, 9]] = 0.0  # upstream's zeros for < 5 streamlines, one subject of each group
    result = analyse(_study(values, y, "group"), 200, 0.05, False, np.random.default_rng(0))
    keep = np.setdiff1d(np.arange(16), [2, 9])
    alone = analyse(_study(values[1:2][..., keep], y[keep], "group"), 200, 0.05, False, np.random.default_rng(0))
    np.testing.assert_allclose(result.stat[1], alone.stat[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.p[1], alone.p[0], rtol=0, atol=1e-12)
    assert result.included[1].sum() == 14 and result.included[0].all()
    mc = analyse(_study(values, y, "group"), 200, 0.05, True, np.random.default_rng(0))  # one permutation of all
    assert np.isfinite(mc.alpha_fwe).all() and mc.alpha_fwe[0] == mc.alpha_fwe[1] < result.alpha_fwe.min()
    subjects = _write_subjects_file(tmp_path, values, y, {})
    code, stdout, err = _run(["-i", subjects, "-o", tmp_path / "o.png", "--nperm", "100", "--seed", "0"], capsys)
    assert code == 0, err
    notes = [line for line in stdout.splitlines() if "all-zero" in line]
    assert len(notes) == 1 and "CST_right: s02, s09" in notes[0] and "AF_left" not in notes[0]
    segments = _segments(tmp_path / "o.png.segments.csv")
    np.testing.assert_allclose(segments["CST_right"][:, 1], alone.p[0], rtol=0, atol=1e-12)


# (4) hostile inputs: one line naming the file, exit 1, no output
def _hostile(tmp_path: Path, case: str) -> tuple[list, Path]:
    values, y, confounds = _data("group", n=12, nb=2, npoints=10)
    ids = [f"sub-{i:02d}" for i in range(12)]
    columns = {"participant_id": ids, "group": [int(v) for v in y], "age": (20 + np.arange(12)).tolist()}
    if case in ("no_tractometry", "three_groups", "constant_target", "text_confound", "few_table"):
        table = _write_study(tmp_path / "study", values[..., :11] if case == "no_tractometry" else values,
                             ids[:11] if case == "no_tractometry" else ids)
        test = ["--group", "group"]
        if case == "three_groups":
            columns["group"][0] = 2
        if case == "constant_target":
            columns["score"], test = [1.5] * 12, ["--target", "score"]
        if case == "text_confound":
            columns["age"][3] = "unknown"
        if case == "few_table":
            columns["group"] = [1, 1] + [0] * 10
        participants = _write_participants(tmp_path / "participants.tsv", columns)
        return ["--table", table, "--participants", participants, *test, "--confounds", "age"], participants
    y_file = y.copy()
    if case == "group_two":
        y_file[0] = 2
    if case == "few_file":
        y_file[:] = 0
        y_file[:2] = 1
    age = [str(a) for a in columns["age"]]
    if case == "text_confound_file":
        age[5] = "old"
    subjects = _write_subjects_file(tmp_path, values, y_file, {"Age": age})
    if case == "missing_csv":
        (tmp_path / "s04" / "Tractometry.csv").unlink()
    if case == "bad_first_line":
        subjects.write_text("\n".join(subjects.read_text().splitlines()[1:]) + "\n")
    return ["-i", subjects], subjects


@pytest.mark.parametrize("case", ["no_tractometry", "missing_csv", "three_groups", "group_two", "constant_target",
                                  "few_table", "few_file", "text_confound", "text_confound_file", "bad_first_line"])
def test_hostile_input(tmp_path, capsys, case):
    argv, named = _hostile(tmp_path, case)
    out = tmp_path / "out"
    code, stdout, err = _run([*argv, "-o", out / "plot.png", "--nperm", "50", "--save_csv"], capsys)
    assert code == 1, (stdout, err)
    assert err.count("\n") == 1 and err.startswith(f"tractseg-aot-stats: error: {named}: "), err
    assert not out.exists()


def test_plot3d_refused_and_bad_command_lines(tmp_path, capsys):
    values, y, _ = _data("group", n=12, nb=2, npoints=10)
    subjects = _write_subjects_file(tmp_path, values, y, {})
    out = tmp_path / "out" / "plot.png"
    code, _, err = _run(["-i", subjects, "-o", out, "--plot3D", "metric"], capsys)
    assert code == 1 and err.startswith("tractseg-aot-stats: error: --plot3D: ") and err.count("\n") == 1
    for argv in (["-i", subjects], ["--table", subjects, "-o", out, "--group", "g"],
                 ["--table", subjects, "--participants", subjects, "-o", out], ["-i", subjects, "-o", out,
                 "--alpha", "2"], ["-i", subjects, "-o", out, "--range", "1"], ["-i", subjects, "-o", out,
                 "--group", "g"], ["-i", subjects, "-o", tmp_path / "plot.xyz"], ["-i", subjects, "-o", out,
                 "--nperm", "10", "--alpha", "0.99"]):
        code, _, err = _run(argv, capsys)
        assert code == 2, (argv, err)
    assert not out.parent.exists()


def test_missing_matplotlib_names_the_extra(tmp_path):
    values, y, _ = _data("group", n=12, nb=2, npoints=10)
    subjects = _write_subjects_file(tmp_path, values, y, {})
    out = tmp_path / "out" / "plot.png"
    done = _run_blocked(("matplotlib", *NOT_NEEDED), ["-i", subjects, "-o", out])
    assert done.returncode == 1 and "pip install 'tractseg-aot[stats]'" in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and not out.parent.exists()


# (6) a study of the study runner: its report marks the significant points on each bundle's profile
def test_study_report_marks_the_significant_points(tmp_path):
    from runtime.cohort.records import TABLE_NAME
    from runtime.cohort.report import write_study_report
    from runtime.cohort.tractometry_table import write_study_table
    from runtime.tractometry.table import TractometryTable

    n, npoints = 16, 30
    patient = np.array([0, 1] * (n // 2), dtype=float)
    values = synthetic_profiles(2, npoints, n, seed=3, effect=0.1, where=(0, 8, 16), groups=patient)
    outroot, rows = tmp_path / "study", []
    for s in range(n):  # what runtime.cohort --chain leaves: OUTROOT/<subject>/Tractometry.csv, cohort.csv
        TractometryTable(("AF_left", "CST_right"), tuple(values[:, :, s]), tuple(values[:, :, s])).write_csv(
            outroot / f"sub-{s:02d}" / "Tractometry.csv")
        rows.append({"subject": f"sub-{s:02d}", "peaks": "x", "status": "done"})
    (outroot / TABLE_NAME).write_text("subject,peaks,status\n" + "".join(f"{r['subject']},x,done\n" for r in rows))
    write_study_table(outroot, rows)
    write_study_report(outroot, rows)
    assert 'class="significant"' not in (outroot / "report.html").read_text()
    participants = _write_participants(tmp_path / "participants.tsv", {
        "participant_id": [f"sub-{s:02d}" for s in range(n)], "group": [int(p) for p in patient]})
    done = _run_blocked(NOT_NEEDED, ["--table", outroot / "tractometry.csv", "--participants", participants,
                                     "--group", "group", "--nperm", "500", "--seed", "0", "-o", tmp_path / "g.png"])
    assert done.returncode == 0, done.stderr
    assert "significant points marked" in done.stdout
    report = (outroot / "report.html").read_text()
    assert 'id="significance"' in report
    rows_html = {row.split('"')[0]: row for row in report.split('data-bundle="')[1:] if "<svg" in row}
    assert rows_html["AF_left"].count('class="significant"') >= 4 and 'class="significant"' not in rows_html[
        "CST_right"]
