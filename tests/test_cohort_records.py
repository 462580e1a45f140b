"""runtime.cohort.records: done-records, resume checks and the cohort table."""
from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import pytest

from runtime.io.checksum import sha256_of
from runtime.cohort.records import (DONE_NAME, ROW_FIELDS, CohortTable, InputIdentity, done_record, is_done,
                                    merge_tables, read_done_record, read_cohort_table, remove_done_record,
                                    table_name, write_done_record)

BUNDLE = "tract_segmentation-0123abcd"
OPTIONS = {"output_type": "tract_segmentation", "single_output_file": False, "get_probabilities": False,
           "postprocess": True}
OUTPUTS = ["bundle_segmentations/AF_left.nii.gz", "bundle_segmentations/AF_right.nii.gz"]


def make_subject(tmp_path: Path, name: str = "sub-01") -> tuple[Path, Path, dict]:
    """A peaks file, a subject folder with its outputs and a matching done-record; returns (folder, peaks, row)."""
    peaks = tmp_path / "in" / name / "peaks.nii.gz"
    peaks.parent.mkdir(parents=True)
    peaks.write_bytes(b"not really nifti")
    folder = tmp_path / "out" / name
    for output in OUTPUTS:
        (folder / output).parent.mkdir(parents=True, exist_ok=True)
        (folder / output).write_bytes(b"mask")
    row = {"subject": name, "peaks": str(peaks), "status": "done", "error": "", "seconds": 12.5,
           "peak_rss_mb": 1742.0, "slices_run": 432, "worker": "node7:0"}
    identity = InputIdentity.stat(peaks)
    identity = InputIdentity(identity.size, identity.mtime_ns, sha256_of(peaks))
    write_done_record(folder, done_record(name, peaks, identity, BUNDLE, OPTIONS, OUTPUTS, row))
    return folder, peaks, row


def test_input_identity_and_sha256(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"abc" * 1000)
    identity = InputIdentity.stat(path)
    assert identity == InputIdentity(3000, os.stat(path).st_mtime_ns, None)
    assert sha256_of(path) == hashlib.sha256(b"abc" * 1000).hexdigest()


def test_done_record_round_trip(tmp_path: Path) -> None:
    folder, peaks, row = make_subject(tmp_path)
    record = read_done_record(folder)
    assert record is not None
    assert record["format"] == 1 and record["subject"] == "sub-01" and record["bundle_id"] == BUNDLE
    assert record["input"] == {"path": str(peaks), "size": peaks.stat().st_size,
                               "mtime_ns": peaks.stat().st_mtime_ns,
                               "sha256": hashlib.sha256(peaks.read_bytes()).hexdigest()}
    assert record["options"] == OPTIONS and record["outputs"] == OUTPUTS and record["row"] == row
    assert is_done(folder, peaks, BUNDLE, dict(reversed(OPTIONS.items()))) == row
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == [DONE_NAME]  # no temporary left
    remove_done_record(folder)
    remove_done_record(folder)  # no record: no error
    assert read_done_record(folder) is None and is_done(folder, peaks, BUNDLE, OPTIONS) is None


def test_options_compare_as_json(tmp_path: Path) -> None:
    peaks = tmp_path / "peaks.nii.gz"
    peaks.write_bytes(b"x")
    folder = tmp_path / "out"
    options = {"bundles": ("CST_left", "CST_right"), "out": Path("a/b")}
    write_done_record(folder, done_record("s", peaks, InputIdentity.stat(peaks), BUNDLE, options, [], {"subject": "s"}))
    assert is_done(folder, peaks, BUNDLE, {"out": "a/b", "bundles": ["CST_left", "CST_right"]}) == {"subject": "s"}


def test_size_change_is_not_done(tmp_path: Path) -> None:
    folder, peaks, _ = make_subject(tmp_path)
    stat = peaks.stat()
    peaks.write_bytes(b"not really nifti, longer")
    os.utime(peaks, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert peaks.stat().st_mtime_ns == stat.st_mtime_ns
    assert is_done(folder, peaks, BUNDLE, OPTIONS) is None


def test_mtime_change_is_not_done(tmp_path: Path) -> None:
    folder, peaks, _ = make_subject(tmp_path)
    stat = peaks.stat()
    os.utime(peaks, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert is_done(folder, peaks, BUNDLE, OPTIONS) is None


def test_other_options_or_bundle_are_not_done(tmp_path: Path) -> None:
    folder, peaks, row = make_subject(tmp_path)
    assert is_done(folder, peaks, BUNDLE, OPTIONS) == row
    assert is_done(folder, peaks, BUNDLE, {**OPTIONS, "single_output_file": True}) is None
    assert is_done(folder, peaks, BUNDLE, {**OPTIONS, "extra": 1}) is None
    assert is_done(folder, peaks, "tract_segmentation-ffffffff", OPTIONS) is None


def test_missing_output_or_input_is_not_done(tmp_path: Path) -> None:
    folder, peaks, row = make_subject(tmp_path)
    (folder / OUTPUTS[1]).unlink()
    assert is_done(folder, peaks, BUNDLE, OPTIONS) is None
    folder, peaks, row = make_subject(tmp_path, "sub-02")
    (folder / "bundle_segmentations" / "AF_left.nii.gz").unlink()
    (folder / "bundle_segmentations" / "AF_right.nii.gz").unlink()
    (folder / "bundle_segmentations").rmdir()
    assert is_done(folder, peaks, BUNDLE, OPTIONS) is None
    folder, peaks, row = make_subject(tmp_path, "sub-03")
    peaks.unlink()
    assert is_done(folder, peaks, BUNDLE, OPTIONS) is None


@pytest.mark.parametrize("content", [b"", b"{\"format\": 1,", b"[1, 2]", b"\xff\xfe", b"null"])
def test_corrupt_record_is_none(tmp_path: Path, content: bytes) -> None:
    folder, peaks, _ = make_subject(tmp_path)
    (folder / DONE_NAME).write_bytes(content)
    assert read_done_record(folder) is None
    assert is_done(folder, peaks, BUNDLE, OPTIONS) is None


@pytest.mark.parametrize("change", [{"format": 2}, {"row": "done"}, {"input": None}, {"outputs": "x"},
                                    {"outputs": ["../sub-02/bundle_segmentations/AF_left.nii.gz"]},
                                    {"outputs": ["/etc/passwd"]}, {"input": {"size": "16"}}])
def test_malformed_record_is_not_done(tmp_path: Path, change: dict) -> None:
    folder, peaks, _ = make_subject(tmp_path)
    make_subject(tmp_path, "sub-02")
    record = read_done_record(folder)
    assert record is not None
    write_done_record(folder, {**record, **change})
    assert is_done(folder, peaks, BUNDLE, OPTIONS) is None


def test_table_writes_are_throttled(tmp_path: Path) -> None:
    path = tmp_path / "out" / "cohort.csv"
    table = CohortTable(path, min_interval_s=3600)
    table.update({"subject": "sub-02", "status": "done", "seconds": 1.5})
    assert table.writes == 1
    with open(path, newline="") as stream:
        assert list(csv.reader(stream)) == [list(ROW_FIELDS), ["sub-02", "", "done", "", "1.5", "", "", "", ""]]
    table.update({"subject": "sub-01", "status": "failed", "error": "x.nii.gz: not 4D, 9"})
    assert table.writes == 1 and [row["subject"] for row in read_cohort_table(path)] == ["sub-02"]
    table.flush()
    assert table.writes == 2
    assert read_cohort_table(path) == [
        {**dict.fromkeys(ROW_FIELDS, ""), "subject": "sub-01", "status": "failed", "error": "x.nii.gz: not 4D, 9"},
        {**dict.fromkeys(ROW_FIELDS, ""), "subject": "sub-02", "status": "done", "seconds": "1.5"},
    ]
    assert [row["subject"] for row in table.rows()] == ["sub-01", "sub-02"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["cohort.csv"]  # no temporary left


def test_table_without_throttle_writes_every_update(tmp_path: Path) -> None:
    path = tmp_path / "cohort.csv"
    table = CohortTable(path, min_interval_s=0)
    table.update({"subject": "a", "status": "running"})
    table.update({"subject": "a", "status": "done"})  # replaces the row
    assert table.writes == 2 and read_cohort_table(path)[0]["status"] == "done" and len(read_cohort_table(path)) == 1


def test_table_rejects_bad_rows(tmp_path: Path) -> None:
    table = CohortTable(tmp_path / "cohort.csv")
    with pytest.raises(ValueError, match="unknown cohort table field"):
        table.update({"subject": "a", "colour": "red"})
    with pytest.raises(ValueError, match="needs a subject"):
        table.update({"status": "done"})
    assert not (tmp_path / "cohort.csv").exists()
    table.flush()
    assert read_cohort_table(tmp_path / "cohort.csv") == []


def test_table_names() -> None:
    assert table_name() == table_name(1, 0) == "cohort.csv"
    assert table_name(4, 0) == "cohort.part-0-of-4.csv" and table_name(4, 3) == "cohort.part-3-of-4.csv"
    with pytest.raises(ValueError):
        table_name(4, 4)


def test_merge_part_tables(tmp_path: Path) -> None:
    names = [f"s{n}" for n in range(7)]
    paths = []
    for part in range(3):
        table = CohortTable(tmp_path / table_name(3, part))
        for name in names[part::3]:
            table.update({"subject": name, "status": "done", "worker": f"part{part}"})
        paths.append(table.flush())
    merged = merge_tables(paths)
    assert [row["subject"] for row in merged] == names
    assert merged[4]["worker"] == "part1"
    stale = CohortTable(tmp_path / "later.csv")
    stale.update({"subject": "s4", "status": "failed"})
    assert merge_tables([*paths, stale.flush()])[4]["status"] == "failed"


def test_read_table_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"absent\.csv: cannot read cohort table"):
        read_cohort_table(tmp_path / "absent.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("name,status\nx,done\n")
    with pytest.raises(ValueError, match=r"bad\.csv: not a cohort table"):
        read_cohort_table(bad)
    bad.write_bytes(b"subject\n\xff\n")
    with pytest.raises(ValueError, match=r"bad\.csv: malformed cohort table"):
        read_cohort_table(bad)
