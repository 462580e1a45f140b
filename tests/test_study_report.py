"""runtime.cohort.report on a fake cohort OUTROOT: the CSV read back with csv, the HTML with html.parser and in a
real headless browser (Debian's chromium; those tests skip only when no chromium binary exists)."""

from __future__ import annotations

import csv
import os
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from runtime.qc.statistics import bundle_statistics, masks_meta, statistics_document, write_statistics
from runtime.cohort.outliers import OUTLIER_Z, robust_z
from runtime.cohort.report import rows_from_disk, write_study_report

SHAPE = (20, 24, 18)
AFFINE = np.diag([-1.5, 1.5, 2.0, 1.0])
VOXEL_ML = 1.5 * 1.5 * 2.0 / 1000
BUNDLES = ("AF_left", "CA", "CST_right")
BASE_VOXELS = {"AF_left": 300, "CA": 40, "CST_right": 500}
ERROR = "peaks.nii.gz: expected 4D with 9 channels, got (10, 10, 10) <&> \"quoted\""
SUBJECTS = ("sub-01", "sub-02", "sub-03", "sub-04", "sub-05", "sub-06", "sub-07", "sub-08")  # 6 done: >= 5 to flag
FAILED, SKIPPED, OUTLIER = "sub-03", "sub-06", "sub-04"          # sub-04: CA 10x bigger
BROWSER_TIMEOUT_S = 60


def mask_with(voxels: int, seed: int) -> np.ndarray:
    """A mask with exactly ``voxels`` voxels set, at random places."""
    rng = np.random.default_rng(seed)
    flat = np.zeros(np.prod(SHAPE), dtype=np.uint8)
    flat[rng.choice(flat.size, size=voxels, replace=False)] = 1
    return flat.reshape(SHAPE)


def tiny_png(path: Path, rgb: tuple[int, int, int]) -> None:
    """A 4x4 one-colour PNG written with the stdlib (the report only links it)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + bytes(rgb) * 4 for _ in range(4))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict], dict[str, dict[str, int]]]:
    """OUTROOT with 8 subjects: 6 done (one an outlier), one failed, one skipped; voxel counts per subject."""
    outroot = tmp_path_factory.mktemp("cohort")
    rows, voxels = [], {}
    for n, subject in enumerate(SUBJECTS):
        status = "failed" if subject == FAILED else "skipped" if subject == SKIPPED else "done"
        rows.append({"subject": subject, "peaks": f"/data/{subject}/peaks.nii.gz", "status": status,
                     "error": ERROR if status == "failed" else None, "seconds": 12.5 + n, "peak_rss_mb": 800.0 + n,
                     "slices_run": 432, "worker": n % 2})
        if status != "done":
            continue
        counts = {b: BASE_VOXELS[b] + 7 * n for b in BUNDLES}
        if subject == OUTLIER:
            counts["CA"] *= 10
        voxels[subject] = counts
        per_bundle = {b: bundle_statistics(mask_with(c, seed=n * 10 + i), None, AFFINE)
                      for i, (b, c) in enumerate(counts.items())}
        write_statistics(statistics_document(per_bundle, masks_meta(subject=subject)),
                         outroot / subject / "statistics.json")
        tiny_png(outroot / subject / "preview.png", (200, 30 + 25 * n, 60))
    write_study_report(outroot, rows)
    return outroot, rows, voxels


class Page(HTMLParser):
    """Collects subject rows, bundle rows, outlier elements and image sources."""

    def __init__(self) -> None:
        super().__init__()
        self.subject_rows: list[dict[str, str]] = []
        self.bundle_rows: list[dict[str, str]] = []
        self.outliers: list[dict[str, str]] = []
        self.images: list[str] = []
        self.text: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = a.get("class", "").split()
        if tag == "tr" and "subject" in classes:
            self.subject_rows.append(a)
        if tag == "tr" and "bundle" in classes:
            self.bundle_rows.append(a)
        if "outlier" in classes:
            self.outliers.append(a)
        if tag == "img":
            self.images.append(a["src"])
        if tag in ("script", "link") or any(a.get(k, "").startswith(("http:", "https:", "//"))
                                            for k in ("src", "href")):
            self.external.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    return page


def check_page(page: Page) -> None:
    order = [row["data-subject"] for row in page.subject_rows]
    assert sorted(order) == sorted(SUBJECTS) and len(order) == len(SUBJECTS)
    assert order[0] == FAILED                                        # failed first
    assert "failed" in page.subject_rows[0]["class"].split()
    flagged = {(o["data-subject"], o["data-bundle"]) for o in page.outliers if "data-bundle" in o}
    assert (OUTLIER, "CA") in flagged
    assert {s for s, _ in flagged} == {OUTLIER}
    outlier_row = next(r for r in page.subject_rows if r["data-subject"] == OUTLIER)
    assert "has-outlier" in outlier_row["class"].split()
    assert [r["data-bundle"] for r in page.bundle_rows] == list(BUNDLES)
    assert [r["data-bundle"] for r in page.bundle_rows if "has-outlier" in r["class"].split()] == ["CA"]


def test_robust_z() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0, 100.0])                     # median 3, MAD 1
    np.testing.assert_allclose(robust_z(x), (x - 3.0) / 1.4826, rtol=1e-12)
    assert np.flatnonzero(np.abs(robust_z(x)) > OUTLIER_Z).tolist() == [4]
    z = robust_z([5.0, 5.0, 5.0, 6.0, 4.0, np.nan])                 # MAD 0: the mean absolute deviation instead
    assert z[:3].tolist() == [0.0, 0.0, 0.0] and np.isnan(z[5]) and np.isfinite(z[:5]).all()
    np.testing.assert_allclose(z[3:5], [1 / (1.253314 * 0.4), -1 / (1.253314 * 0.4)], rtol=1e-12)
    assert robust_z([7.0] * 6).tolist() == [0.0] * 6                # all equal: nobody stands out
    assert np.isnan(robust_z([np.nan, np.nan])).all()
    assert np.isnan(robust_z([1.0, 50.0, 2.0])).all()               # n = 3: too few to flag anyone


def test_statistics_csv(cohort) -> None:
    outroot, rows, voxels = cohort
    with open(outroot / "statistics.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == ["subject", *BUNDLES]
    assert [line["subject"] for line in table] == [row["subject"] for row in rows]
    for line in table:
        subject = line["subject"]
        if subject not in voxels:
            assert all(line[b] == "" for b in BUNDLES), subject
            continue
        for bundle in BUNDLES:
            assert float(line[bundle]) == pytest.approx(voxels[subject][bundle] * VOXEL_ML, abs=5e-5)
    assert not [p.name for p in outroot.iterdir() if p.name.startswith(".")]     # no temporaries left


def test_report_html_structure(cohort) -> None:
    outroot, _, _ = cohort
    text = (outroot / "report.html").read_text(encoding="utf-8")
    page = parse(text)
    check_page(page)
    assert page.external == []                                       # self-contained: no script, link, URL
    assert "<&>" not in text and ERROR in "".join(page.text)        # escaped in the file, intact when parsed
    assert sorted(page.images) == sorted(f"{s}/preview.png" for s in SUBJECTS if s not in (FAILED, SKIPPED))
    assert all((outroot / src).is_file() for src in page.images)    # relative to the page


def test_rerun_gives_same_files(cohort) -> None:
    outroot, rows, _ = cohort
    before = {name: (outroot / name).read_bytes() for name in ("statistics.csv", "report.html")}
    write_study_report(outroot, rows)
    assert before == {name: (outroot / name).read_bytes() for name in ("statistics.csv", "report.html")}
    as_text = [{k: "" if v is None else str(v) for k, v in row.items()} for row in rows]  # cohort.csv's cells
    write_study_report(outroot, as_text)
    assert before == {name: (outroot / name).read_bytes() for name in ("statistics.csv", "report.html")}
    recovered = rows_from_disk(outroot)                              # rows lost: rebuilt from statistics.json
    assert [(r["subject"], r["status"]) for r in recovered] == [(s, "done") for s in ("sub-01", "sub-02", "sub-04",
                                                                                      "sub-05", "sub-07", "sub-08")]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no chromium binary (apt-get install chromium): headless-browser check of report.html skipped")


def run_browser(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", *args]
    env = {**os.environ, "HOME": str(tmp_path)}
    return subprocess.run(command, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S, env=env, check=False)


def test_report_in_headless_browser_dom(cohort, tmp_path: Path) -> None:
    outroot, _, _ = cohort
    result = run_browser(tmp_path, "--dump-dom", (outroot / "report.html").as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    check_page(parse(result.stdout))


def test_report_in_headless_browser_screenshot(cohort, tmp_path: Path) -> None:
    outroot, _, _ = cohort
    shot = tmp_path / "shot.png"
    result = run_browser(tmp_path, f"--screenshot={shot}", "--window-size=1200,900", "--hide-scrollbars",
                         (outroot / "report.html").as_uri())
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    image = pytest.importorskip("PIL.Image", reason="Pillow not installed: cannot decode the screenshot")
    pixels = np.asarray(image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (900, 1200)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50       # text, table shading, thumbnails, plots


def test_subjects_whose_peaks_look_flipped_come_first(tmp_path):
    """The orientation check's warning travels in a subject's warnings; the report lists those subjects first
    (after failed ones) with the warning in view."""
    rows = [{"subject": s, "status": "done", "warnings": ""} for s in ("sub-01", "sub-02", "sub-03")]
    rows[2]["warnings"] = "oblique by 3 deg | sub-03_peaks.nii.gz: the peaks' y axis looks flipped (margin 0.062)"
    write_study_report(tmp_path, rows)
    page = (tmp_path / "report.html").read_text()
    table = page.split('<table id="subjects">')[1].split("</table>")[0]
    order = [part.split('"')[0] for part in table.split('data-subject="')[1:]]
    assert order == ["sub-03", "sub-01", "sub-02"]
    assert 'class="subject done flipped"' in table and "y axis looks flipped" in table


def test_demo_weights_are_said_on_the_page(tmp_path):
    """A study whose statistics came from demo weights says so at the top of the report."""
    write_statistics(statistics_document({"CA": bundle_statistics(mask_with(40, 1), None, AFFINE)},
                                         masks_meta(subject="sub-01", demo_weights=True)),
                     tmp_path / "sub-01" / "statistics.json")
    write_study_report(tmp_path, [{"subject": "sub-01", "status": "done"}])
    assert 'id="demo">DEMO WEIGHTS' in (tmp_path / "report.html").read_text()
    write_statistics(statistics_document({"CA": bundle_statistics(mask_with(40, 1), None, AFFINE)},
                                         masks_meta(subject="sub-01")), tmp_path / "sub-01" / "statistics.json")
    write_study_report(tmp_path, [{"subject": "sub-01", "status": "done"}])
    assert "DEMO WEIGHTS" not in (tmp_path / "report.html").read_text()
