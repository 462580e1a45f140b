"""runtime.cohort.subjects: discovery of a cohort's peaks files, subject ids, list files and job-array parts."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from runtime.cohort.parts import split_parts
from runtime.cohort.subjects import CohortInputError, Subject, discover, safe_id, subject_id


def touch(path: Path, content: bytes = b"peaks") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def ids(subjects: list[Subject]) -> list[str]:
    return [subject.id for subject in subjects]


def test_bids_tree_gives_sub_ids_sorted(tmp_path: Path) -> None:
    for sub in ("sub-02", "sub-01", "sub-10"):
        touch(tmp_path / sub / "dwi" / f"{sub}_desc-csd_peaks.nii.gz")
    touch(tmp_path / "sub-01" / "anat" / "sub-01_T1w.nii.gz")  # not matched by the pattern
    subjects = discover([str(tmp_path)])
    assert ids(subjects) == ["sub-01", "sub-02", "sub-10"]
    assert subjects[0].peaks == tmp_path / "sub-01" / "dwi" / "sub-01_desc-csd_peaks.nii.gz"
    assert all(subject.peaks.is_absolute() for subject in subjects)


def test_bids_sessions_do_not_collide(tmp_path: Path) -> None:
    for ses in ("ses-1", "ses-2"):
        touch(tmp_path / "sub-01" / ses / "dwi" / f"sub-01_{ses}_peaks.nii.gz")
    touch(tmp_path / "sub-02" / "dwi" / "sub-02_ses-3_peaks.nii.gz")  # session only in the file name
    assert ids(discover([str(tmp_path)])) == ["sub-01_ses-1", "sub-01_ses-2", "sub-02_ses-3"]


def test_bids_entities_in_a_flat_folder(tmp_path: Path) -> None:
    touch(tmp_path / "derivatives" / "sub-07_ses-pre_space-T1w_peaks.nii.gz")
    touch(tmp_path / "derivatives" / "sub-08_peaks.nii")
    assert ids(discover([str(tmp_path)], pattern="**/*peaks*.nii*")) == ["sub-07_ses-pre", "sub-08"]


def test_generic_names_take_the_subject_folder(tmp_path: Path) -> None:
    touch(tmp_path / "subjA" / "peaks.nii.gz")
    touch(tmp_path / "subjB" / "tractseg_output" / "peaks.nii.gz")  # upstream TractSeg's own layout
    touch(tmp_path / "100307" / "T1w" / "Diffusion" / "peaks.nii.gz")  # HCP layout
    touch(tmp_path / "subjC" / "_peaks_.nii.gz")
    assert ids(discover([str(tmp_path)])) == ["100307", "subjA", "subjB", "subjC"]


def test_specific_names_take_the_file_name(tmp_path: Path) -> None:
    touch(tmp_path / "all" / "patient7_peaks.nii.gz")
    touch(tmp_path / "all" / "patient8.peaks.nii")
    assert ids(discover([str(tmp_path)], pattern="*/*peaks*")) == ["patient7_peaks", "patient8.peaks"]


def test_ids_are_made_safe(tmp_path: Path) -> None:
    assert safe_id("a b/c:d") == "a_b_c_d"
    assert safe_id(".hidden") == "_hidden"
    assert safe_id("..") == "__"
    assert safe_id("") == "_"
    assert safe_id("Müller") == "M_ller"
    long = safe_id("x" * 300)
    assert len(long) == 128 and long == safe_id("x" * 300) and long != safe_id("x" * 301)
    peaks = touch(tmp_path / "Patient One (2)" / "peaks.nii.gz")
    assert subject_id(peaks) == "Patient_One__2_"


def test_collision_names_both_files_and_the_id(tmp_path: Path) -> None:
    first = touch(tmp_path / "a" / "subj1" / "peaks.nii.gz")
    second = touch(tmp_path / "b" / "subj1" / "peaks.nii.gz")
    with pytest.raises(CohortInputError) as caught:
        discover([str(tmp_path / "a"), str(tmp_path / "b")])
    message = str(caught.value)
    assert "\n" not in message
    assert "'subj1'" in message and str(first) in message and str(second) in message


def test_collision_after_sanitising(tmp_path: Path) -> None:
    touch(tmp_path / "x y" / "peaks.nii.gz")
    touch(tmp_path / "x:y" / "peaks.nii.gz")
    with pytest.raises(CohortInputError, match="'x_y'"):
        discover([str(tmp_path)])


def test_same_file_twice_counts_once(tmp_path: Path) -> None:
    peaks = touch(tmp_path / "sub-01" / "dwi" / "sub-01_peaks.nii.gz")
    link = tmp_path / "elsewhere" / "sub-01_peaks.nii.gz"
    link.parent.mkdir()
    link.symlink_to(peaks)
    relative = os.path.relpath(peaks)
    subjects = discover([str(peaks), str(tmp_path), relative, str(link)])
    assert subjects == [Subject("sub-01", peaks)]


def test_explicit_file_need_not_match_the_pattern(tmp_path: Path) -> None:
    peaks = touch(tmp_path / "s9" / "fod_directions.nii.gz")
    assert discover([str(peaks)]) == [Subject("fod_directions", peaks)]


def test_pattern_option(tmp_path: Path) -> None:
    touch(tmp_path / "s1" / "peaks.nii.gz")
    touch(tmp_path / "s2" / "peaks.nii.gz")
    touch(tmp_path / "s2" / "other" / "csd.nii.gz")
    assert ids(discover([str(tmp_path)], pattern="*/peaks.nii.gz")) == ["s1", "s2"]
    assert ids(discover([str(tmp_path)], pattern="**/csd.nii.gz")) == ["csd"]
    with pytest.raises(CohortInputError, match=r"no file matches '\*/\*\.mif'"):
        discover([str(tmp_path)], pattern="*/*.mif")


def test_hidden_matches_are_skipped(tmp_path: Path) -> None:
    touch(tmp_path / "s1" / "peaks.nii.gz")
    touch(tmp_path / "s1" / "._peaks.nii.gz")  # macOS resource fork
    touch(tmp_path / ".snapshot" / "s1" / "peaks.nii.gz")
    assert discover([str(tmp_path)]) == [Subject("s1", tmp_path / "s1" / "peaks.nii.gz")]


def test_missing_input_and_empty_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope_peaks.nii.gz"
    with pytest.raises(CohortInputError, match=f"^{re.escape(str(missing))}: no such file or directory$"):
        discover([str(missing)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CohortInputError, match=f"^{re.escape(str(tmp_path / 'empty'))}: no file matches"):
        discover([str(tmp_path / "empty")])
    with pytest.raises(CohortInputError, match="no input"):
        discover([])
    with pytest.raises(TypeError):
        discover(str(tmp_path))  # type: ignore[arg-type]


def test_plain_list_file_with_relative_paths(tmp_path: Path) -> None:
    first = touch(tmp_path / "data" / "s1" / "peaks.nii.gz")
    second = touch(tmp_path / "data" / "s2" / "peaks.nii.gz")
    touch(tmp_path / "data" / "tree" / "sub-05" / "dwi" / "sub-05_peaks.nii.gz")
    listing = tmp_path / "lists" / "cohort.txt"
    listing.parent.mkdir()
    listing.write_text(f"# my cohort\n\n../data/s1/peaks.nii.gz\n  {second}  \n# ../data/s3/peaks.nii.gz\n"
                       "../data/tree\n")
    subjects = discover([], list_file=str(listing))
    assert subjects == [Subject("s1", first), Subject("s2", second),
                        Subject("sub-05", tmp_path / "data" / "tree" / "sub-05" / "dwi" / "sub-05_peaks.nii.gz")]


def test_list_file_and_inputs_together(tmp_path: Path) -> None:
    first = touch(tmp_path / "s1" / "peaks.nii.gz")
    second = touch(tmp_path / "s2" / "peaks.nii.gz")
    listing = tmp_path / "list.txt"
    listing.write_text("s2/peaks.nii.gz\ns1/peaks.nii.gz\n")
    assert discover([str(first)], list_file=listing) == [Subject("s1", first), Subject("s2", second)]


def test_csv_list_file_sets_ids(tmp_path: Path) -> None:
    first = touch(tmp_path / "raw" / "a" / "peaks.nii.gz")
    second = touch(tmp_path / "raw" / "b" / "peaks.nii.gz")
    listing = tmp_path / "cohort.csv"
    listing.write_text("\ufeffsite,Subject,peaks\n# comment\nX,P002,raw/b/peaks.nii.gz\n"
                       f"X,P 001,{first}\n\n")
    assert discover([], list_file=listing) == [Subject("P002", second), Subject("P_001", first)]


def test_csv_id_colliding_with_a_derived_id(tmp_path: Path) -> None:
    first = touch(tmp_path / "s1" / "peaks.nii.gz")
    second = touch(tmp_path / "other" / "peaks.nii.gz")
    listing = tmp_path / "cohort.csv"
    listing.write_text("subject,peaks\ns1,other/peaks.nii.gz\n")
    with pytest.raises(CohortInputError) as caught:
        discover([str(first)], list_file=listing)
    assert str(first) in str(caught.value) and str(second) in str(caught.value)


def test_list_file_errors_name_the_file_and_line(tmp_path: Path) -> None:
    touch(tmp_path / "s1" / "peaks.nii.gz")
    listing = tmp_path / "list.txt"
    listing.write_text("s1/peaks.nii.gz\n\ns2/peaks.nii.gz\n")
    where = re.escape(str(listing))
    missing = re.escape(str(tmp_path / "s2" / "peaks.nii.gz"))
    with pytest.raises(CohortInputError, match=f"^{where}:3: {missing}: no such file"):
        discover([], list_file=listing)

    listing.write_text("subject,peaks\ns1,s9/peaks.nii.gz\n")
    with pytest.raises(CohortInputError, match=f"^{where}:2: .*s9/peaks.nii.gz: no such file$"):
        discover([], list_file=listing)
    listing.write_text("subject,peaks\ns1,s1\n")
    with pytest.raises(CohortInputError, match=f"^{where}:2: .*is a directory"):
        discover([], list_file=listing)
    listing.write_text("subject,peaks\ns1\n")
    with pytest.raises(CohortInputError, match=f"^{where}:2: fewer columns"):
        discover([], list_file=listing)
    listing.write_text("subject,peaks\n,s1/peaks.nii.gz\n")
    with pytest.raises(CohortInputError, match=f"^{where}:2: empty subject"):
        discover([], list_file=listing)
    listing.write_text("subject,peaks\n")
    with pytest.raises(CohortInputError, match=f"^{where}: CSV list file has a header and no subject$"):
        discover([], list_file=listing)
    listing.write_text("# nothing\n\n")
    with pytest.raises(CohortInputError, match=f"^{where}: list file names no path$"):
        discover([], list_file=listing)
    listing.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(CohortInputError, match=f"^{where}: list file is not UTF-8"):
        discover([], list_file=listing)
    absent = tmp_path / "absent.txt"
    with pytest.raises(CohortInputError, match=f"^{re.escape(str(absent))}: cannot read list file"):
        discover([], list_file=absent)


def test_parts_cover_the_cohort_once_and_deterministically() -> None:
    subjects = [Subject(f"sub-{n:03d}", Path(f"/d/{n}.nii.gz")) for n in range(23)]
    shuffled = subjects[7:] + subjects[:7]
    for num_parts in (1, 2, 5, 23, 40):
        parts = [split_parts(shuffled, num_parts, part) for part in range(num_parts)]
        union = [subject for part in parts for subject in part]
        assert sorted(union, key=lambda s: s.id) == subjects
        assert len(set(union)) == len(union)
        assert parts == [split_parts(subjects, num_parts, part) for part in range(num_parts)]
    assert ids(split_parts(subjects, 5, 2)) == ["sub-002", "sub-007", "sub-012", "sub-017", "sub-022"]


@pytest.mark.parametrize("num_parts, part_id", [(0, 0), (-1, 0), (2, 2), (2, -1), (True, 0), (2, 1.0)])
def test_parts_are_validated(num_parts: int, part_id: int) -> None:
    with pytest.raises(ValueError) as caught:
        split_parts([], num_parts, part_id)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("pattern", ["/etc/*", "../*/*", "sub-*/../../*"])
def test_a_pattern_that_leaves_the_study_is_refused_before_any_work(tmp_path, capsys, pattern):
    from runtime.cohort.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), "-o", str(tmp_path / "out"), "--pattern", pattern])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "must not leave the folder" in err and pattern in err
    assert not (tmp_path / "out").exists()
