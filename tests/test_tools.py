"""tractseg-aot-tools (runtime.tools): each helper command against upstream TractSeg 2.10's own script or function
on the same small files (calc_FA: FA within 1e-5; flip_peaks, rotate_bvecs, remove_negative_values: the output
file byte for byte; get_image_spacing: the printed line), each bad input refused in one line naming the file with
nothing written, and every command run with jax and torch blocked."""
from __future__ import annotations

import contextlib
import io
import json
import runpy
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from runtime.tools.__main__ import main
from tests.no_jax import run_python
from tests.run_support import LAS, files_under

PREFIX = "tractseg-aot-tools: error: "
BIN = Path(sys.executable).parent  # upstream's scripts, installed beside the venv's python


def upstream_script(name: str, *args) -> str:
    """Run upstream's installed script in this process (runpy, as ``name args``); returns what it printed."""
    script = BIN / name
    if not script.is_file():
        pytest.skip(f"upstream's {name} is not installed (tractseg==2.10)")
    saved = sys.argv
    sys.argv = [str(script), *map(str, args)]
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = saved
    return printed.getvalue()


def tool(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def phantom_dwi(folder: Path, shape=(6, 5, 4), seed: int = 0) -> dict[str, Path]:
    """A small DWI (2 b0s, 30 directions at b=1000, bvecs rounded to 4 decimals), FSL bvals/bvecs, and a mask with
    fractional values (0.3 out, 0.5 and 1 in) on the DWI's grid."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(30, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    bvecs = np.round(np.vstack([np.zeros((2, 3)), directions]), 4)
    bvals = np.r_[0.0, 5.0, np.full(30, 1000.0)]
    rotations = np.linalg.qr(rng.normal(size=(int(np.prod(shape)), 3, 3)))[0]
    evals = rng.uniform([1.2e-3, 0.2e-3, 0.2e-3], [1.8e-3, 0.6e-3, 0.4e-3], size=(rotations.shape[0], 3))
    tensors = np.einsum("nij,nj,nkj->nik", rotations, evals, rotations)
    signal = 800 * np.exp(-bvals * np.einsum("bi,nij,bj->nb", bvecs, tensors, bvecs))
    signal = np.abs(signal + rng.normal(scale=15, size=signal.shape)).reshape(*shape, -1).astype(np.float32)
    mask = np.full(shape, 0.3)
    mask[1:-1, 1:-1, 1:-1] = 1.0
    mask[1, 1, 1] = 0.5
    paths = {"dwi": folder / "Diffusion.nii.gz", "bvals": folder / "Diffusion.bvals",
             "bvecs": folder / "Diffusion.bvecs", "mask": folder / "nodif_brain_mask.nii.gz"}
    nib.save(nib.Nifti1Image(signal, LAS), paths["dwi"])
    nib.save(nib.Nifti1Image(mask.astype(np.float32), LAS), paths["mask"])
    paths["bvals"].write_text(" ".join(f"{b:g}" for b in bvals) + "\n")
    paths["bvecs"].write_text("\n".join(" ".join(f"{v:.4f}" for v in row) for row in bvecs.T) + "\n")
    return paths


def peaks_file(path: Path, channels: int = 9, seed: int = 1) -> Path:
    data = np.random.default_rng(seed).normal(size=(5, 4, 3, channels)).astype(np.float32)
    data[0, 0, 0, :3] = 0.0  # zeros become -0.0 where negated, as upstream
    nib.save(nib.Nifti1Image(data, LAS), path)
    return path


def fsl_matrix(path: Path, seed: int = 2) -> Path:
    rng = np.random.default_rng(seed)
    rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ np.diag([1.1, 0.9, 1.25])
    matrix[:3, 3] = [3.5, -2.0, 7.25]
    path.write_text("".join(" ".join(f"{v:.6f}" for v in row) + "  \n" for row in matrix))  # FLIRT's layout
    return path


# ---------------------------------------------------------------- equal to upstream


def test_calc_fa_equals_upstreams_script(tmp_path, capsys):
    pytest.importorskip("dipy")
    paths = phantom_dwi(tmp_path)
    ours, theirs = tmp_path / "FA.nii.gz", tmp_path / "FA_upstream.nii.gz"
    code, out, err = tool(capsys, "calc_FA", "-i", paths["dwi"], "-o", ours, "--bvals", paths["bvals"],
                          "--bvecs", paths["bvecs"], "--brain_mask", paths["mask"])
    assert (code, out, err) == (0, "", "")
    with pytest.warns(UserWarning):  # dipy 1.12 asks for bvecs as a keyword (upstream passes it positionally)
        upstream_script("calc_FA", "-i", paths["dwi"], "-o", theirs, "--bvals", paths["bvals"],
                        "--bvecs", paths["bvecs"], "--brain_mask", paths["mask"])
    mine, reference = nib.load(ours), nib.load(theirs)
    assert mine.get_data_dtype() == reference.get_data_dtype() == np.float32
    np.testing.assert_array_equal(mine.affine, reference.affine)
    a, b = mine.get_fdata(), reference.get_fdata()
    assert np.abs(a - b).max() <= 1e-5
    inside = nib.load(paths["mask"]).get_fdata() >= 0.5
    assert (a[~inside] == 0).all() and 0.2 < a[inside].mean() < 0.9 and (a[inside] > 0).all()


@pytest.mark.parametrize("axis", ["x", "y", "z"])
def test_flip_peaks_is_upstreams_file_byte_for_byte(tmp_path, capsys, axis):
    source = peaks_file(tmp_path / "peaks.nii.gz")
    ours, theirs = tmp_path / f"ours_{axis}.nii.gz", tmp_path / f"theirs_{axis}.nii.gz"
    assert tool(capsys, "flip_peaks", "-i", source, "-o", ours, "-a", axis) == (0, "", "")
    upstream_script("flip_peaks", "-i", source, "-o", theirs, "-a", axis)
    assert ours.read_bytes() == theirs.read_bytes()
    # upstream's library function agrees too
    from tractseg.libs.img_utils import flip_peaks

    expected = flip_peaks(nib.load(source).get_fdata(), axis)
    assert np.array_equal(nib.load(ours).get_fdata(), expected)


def test_rotate_bvecs_is_upstreams_text_byte_for_byte(tmp_path, capsys):
    bvecs = phantom_dwi(tmp_path)["bvecs"]
    matrix = fsl_matrix(tmp_path / "FA_2_MNI.mat")
    ours, theirs = tmp_path / "ours.bvecs", tmp_path / "theirs.bvecs"
    assert tool(capsys, "rotate_bvecs", "-i", bvecs, "-t", matrix, "-o", ours) == (0, "", "")
    upstream_script("rotate_bvecs", "-i", bvecs, "-t", matrix, "-o", theirs)
    assert ours.read_bytes() == theirs.read_bytes()
    assert len(ours.read_text().splitlines()) == 3
    single = tmp_path / "one.bvecs"  # one vector as one row: upstream writes 3 lines of one value
    single.write_text("0.6 0 0.8\n")
    assert tool(capsys, "rotate_bvecs", "-i", single, "-t", matrix, "-o", ours)[0] == 0
    upstream_script("rotate_bvecs", "-i", single, "-t", matrix, "-o", theirs)
    assert ours.read_bytes() == theirs.read_bytes()
    columns = tmp_path / "columns.bvecs"  # 3 columns: upstream crashes; here the transpose, written as 3 rows
    columns.write_text("\n".join(" ".join(row) for row in zip(*(line.split() for line in bvecs.read_text().split("\n")
                                                                 if line))) + "\n")
    assert tool(capsys, "rotate_bvecs", "-i", columns, "-t", matrix, "-o", ours)[0] == 0
    upstream_script("rotate_bvecs", "-i", bvecs, "-t", matrix, "-o", theirs)
    assert ours.read_bytes() == theirs.read_bytes()


@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_remove_negative_values_is_upstreams_file(tmp_path, capsys, dtype):
    data = (np.random.default_rng(3).normal(size=(5, 4, 3)) * 100).astype(dtype)
    if dtype == np.float32:
        data[0, 0, 0], data[0, 0, 1] = np.nan, -np.inf
    source = tmp_path / "image.nii.gz"
    nib.save(nib.Nifti1Image(data, LAS), source)
    ours, flagged, theirs = tmp_path / "ours.nii.gz", tmp_path / "flagged.nii.gz", tmp_path / "theirs.nii.gz"
    assert tool(capsys, "remove_negative_values", source, ours) == (0, "", "")  # upstream's positional form
    assert tool(capsys, "remove_negative_values", "-i", source, "-o", flagged) == (0, "", "")
    try:
        upstream_script("remove_negative_values", source, theirs)
    except nib.deprecator.ExpiredDeprecationError:  # nibabel >= 5 removed get_data(): its own replacement
        image = nib.load(source)
        reference = np.asanyarray(image.dataobj)
        reference[reference < 0] = 0
        nib.save(nib.Nifti1Image(reference, image.affine), theirs)
    assert ours.read_bytes() == flagged.read_bytes() == theirs.read_bytes()
    assert nib.load(ours).get_data_dtype() == dtype


@pytest.mark.parametrize("diagonal", [1.25, -2.0, 1.005, 2.675, 0.285, 1.2549999])
def test_get_image_spacing_prints_upstreams_line(tmp_path, capsys, diagonal):
    affine = np.diag([diagonal, abs(diagonal), abs(diagonal), 1.0])
    source = tmp_path / "t1.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3), np.float32), affine), source)
    code, out, err = tool(capsys, "get_image_spacing", source)
    assert (code, err) == (0, "")
    assert out == upstream_script("get_image_spacing", source)
    from tractseg.libs.img_utils import get_image_spacing
    assert out == get_image_spacing(str(source)) + "\n"
    assert tool(capsys, "get_image_spacing", "-i", source)[1] == out


def test_get_image_spacing_warns_on_anisotropic_or_rotated_grids(tmp_path, capsys):
    source = tmp_path / "aniso.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3), np.float32), np.diag([1.0, 1.0, 2.0, 1.0])), source)
    code, out, err = tool(capsys, "get_image_spacing", source)
    assert (code, out) == (0, "1.0\n") and err.count("\n") == 1 and "warning" in err and "2 mm" in err


# ---------------------------------------------------------------- refused in one line, nothing written


def _refused(capsys, tmp_path, args, names) -> str:
    before = files_under(tmp_path)
    code, out, err = tool(capsys, *args)
    lines = err.splitlines()
    assert code == 1 and out == "" and len(lines) == 1 and lines[0].startswith(PREFIX), err
    assert str(names) in lines[0], lines[0]
    assert files_under(tmp_path) == before, "a refused command wrote files"
    return lines[0]


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    bad = {"text": tmp_path / "notes.nii.gz", "3d": tmp_path / "three_d.nii.gz", "10ch": tmp_path / "ten.nii.gz",
           "cut": tmp_path / "cut.nii.gz", "matrix2": tmp_path / "small.mat", "words": tmp_path / "words.mat",
           "zero": tmp_path / "zero.mat", "bvecs4": tmp_path / "four.bvecs", "missing": tmp_path / "missing.nii.gz"}
    bad["text"].write_text("not an image\n")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), LAS), bad["3d"])
    peaks_file(bad["10ch"], channels=10)
    whole = peaks_file(tmp_path / "whole.nii.gz").read_bytes()
    bad["cut"].write_bytes(whole[: len(whole) // 2])
    bad["matrix2"].write_text("1 0\n0 1\n")
    bad["words"].write_text("1 0 0 0\n0 one 0 0\n0 0 1 0\n0 0 0 1\n")
    bad["zero"].write_text("1 0 0 0\n0 0 0 0\n0 0 1 0\n0 0 0 1\n")
    bad["bvecs4"].write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    return bad


def test_bad_images_matrices_and_outputs_are_refused_in_one_line(tmp_path, capsys):
    bad, peaks, out = _bad_files(tmp_path), peaks_file(tmp_path / "peaks.nii.gz"), tmp_path / "out.nii.gz"
    bvecs = phantom_dwi(tmp_path)["bvecs"]
    matrix = fsl_matrix(tmp_path / "good.mat")
    (tmp_path / "folder.nii.gz").mkdir()
    cases = [
        (["flip_peaks", "-i", bad["missing"], "-o", out, "-a", "x"], bad["missing"]),
        (["flip_peaks", "-i", bad["text"], "-o", out, "-a", "x"], bad["text"]),
        (["flip_peaks", "-i", bad["3d"], "-o", out, "-a", "y"], bad["3d"]),
        (["flip_peaks", "-i", bad["10ch"], "-o", out, "-a", "z"], bad["10ch"]),
        (["flip_peaks", "-i", bad["cut"], "-o", out, "-a", "x"], bad["cut"]),
        (["flip_peaks", "-i", peaks, "-o", tmp_path / "out.txt", "-a", "x"], tmp_path / "out.txt"),
        (["flip_peaks", "-i", peaks, "-o", tmp_path / "folder.nii.gz", "-a", "x"], tmp_path / "folder.nii.gz"),
        (["flip_peaks", "-i", peaks, "-o", peaks / "x.nii.gz", "-a", "x"], peaks / "x.nii.gz"),
        (["remove_negative_values", bad["cut"], out], bad["cut"]),
        (["remove_negative_values", "-i", tmp_path, "-o", out], tmp_path),
        (["get_image_spacing", bad["text"]], bad["text"]),
        (["rotate_bvecs", "-i", bvecs, "-t", bad["matrix2"], "-o", tmp_path / "o.bvecs"], bad["matrix2"]),
        (["rotate_bvecs", "-i", bvecs, "-t", bad["words"], "-o", tmp_path / "o.bvecs"], bad["words"]),
        (["rotate_bvecs", "-i", bvecs, "-t", bad["zero"], "-o", tmp_path / "o.bvecs"], bad["zero"]),
        (["rotate_bvecs", "-i", bad["bvecs4"], "-t", matrix, "-o", tmp_path / "o.bvecs"], bad["bvecs4"]),
        (["rotate_bvecs", "-i", bad["missing"], "-t", matrix, "-o", tmp_path / "o.bvecs"], bad["missing"]),
        (["rotate_bvecs", "-i", bvecs, "-t", matrix, "-o", tmp_path], tmp_path),
    ]
    for args, names in cases:
        _refused(capsys, tmp_path, args, names)


def test_bad_diffusion_inputs_are_refused_in_one_line(tmp_path, capsys):
    pytest.importorskip("dipy")
    paths = phantom_dwi(tmp_path)
    out = tmp_path / "FA.nii.gz"

    def calc(**change):
        given = {**paths, **change}
        return ["calc_FA", "-i", given["dwi"], "-o", out, "--bvals", given["bvals"], "--bvecs", given["bvecs"],
                "--brain_mask", given["mask"]]

    short, scaled, single_shell, few = (tmp_path / name for name in ("short.bvals", "scaled.bvecs", "shell.bvals",
                                                                     "few.bvecs"))
    short.write_text(" ".join(["1000"] * 5) + "\n")
    scaled.write_text("\n".join(" ".join(f"{2 * float(v):g}" for v in line.split())
                                for line in paths["bvecs"].read_text().splitlines()) + "\n")
    single_shell.write_text(" ".join(["1000"] * 32) + "\n")
    shell_bvecs = tmp_path / "shell.bvecs"  # every volume weighted, so every bvec unit: no b0, one shell
    rows = [line.split() for line in paths["bvecs"].read_text().splitlines()]
    shell_bvecs.write_text("\n".join(" ".join(["1" if axis == 0 else "0"] * 2 + row[2:])
                                     for axis, row in enumerate(rows)) + "\n")
    unit = np.zeros((32, 3))
    unit[:, 0] = 1.0  # one direction only
    few.write_text("\n".join(" ".join(f"{v:g}" for v in row) for row in unit.T) + "\n")
    other_grid, nan_dwi = tmp_path / "other_mask.nii.gz", tmp_path / "nan_dwi.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((6, 5, 3), np.float32), LAS), other_grid)
    dwi = nib.load(paths["dwi"]).get_fdata().astype(np.float32)
    dwi[2, 2, 2, 7] = np.nan
    nib.save(nib.Nifti1Image(dwi, LAS), nan_dwi)
    cases = [(calc(bvals=short), short), (calc(bvecs=scaled), scaled),
             (calc(bvals=single_shell, bvecs=shell_bvecs), single_shell),
             (calc(bvecs=few), few), (calc(mask=other_grid), other_grid), (calc(dwi=nan_dwi), nan_dwi),
             (calc(dwi=paths["mask"]), paths["mask"]), (calc(bvals=tmp_path / "none.bvals"), tmp_path / "none.bvals")]
    for args, names in cases:
        _refused(capsys, tmp_path, args, names)


def test_calc_fa_without_dipy_names_the_extra(tmp_path, capsys, monkeypatch):
    paths = phantom_dwi(tmp_path)
    monkeypatch.setitem(sys.modules, "dipy", None)  # "import dipy" raises ImportError
    line = _refused(capsys, tmp_path, ["calc_FA", "-i", paths["dwi"], "-o", tmp_path / "FA.nii.gz", "--bvals",
                                       paths["bvals"], "--bvecs", paths["bvecs"], "--brain_mask", paths["mask"]],
                    "tractseg-aot[diffusion]")
    assert "dipy" in line


def test_usage_errors_exit_2(capsys):
    for args in ([], ["flip_peaks", "-i", "a.nii", "-o", "b.nii", "-a", "w"], ["remove_negative_values", "a.nii"],
                 ["remove_negative_values", "a.nii", "b.nii", "-o", "c.nii"], ["get_image_spacing"],
                 ["calc_FA", "-i", "a.nii"], ["rotate_bvecs", "-i", "", "-t", "m", "-o", "o"]):
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 2
        assert "Traceback" not in capsys.readouterr().err


# ---------------------------------------------------------------- no jax, no torch


def test_every_command_runs_with_jax_and_torch_blocked(tmp_path):
    paths = phantom_dwi(tmp_path)
    peaks, matrix = peaks_file(tmp_path / "peaks.nii.gz"), fsl_matrix(tmp_path / "m.mat")
    commands = [
        ["calc_FA", "-i", paths["dwi"], "-o", tmp_path / "FA.nii.gz", "--bvals", paths["bvals"], "--bvecs",
         paths["bvecs"], "--brain_mask", paths["mask"]],
        ["flip_peaks", "-i", peaks, "-o", tmp_path / "flipped.nii.gz", "-a", "x"],
        ["rotate_bvecs", "-i", paths["bvecs"], "-t", matrix, "-o", tmp_path / "rotated.bvecs"],
        ["remove_negative_values", peaks, tmp_path / "positive.nii.gz"],
        ["get_image_spacing", peaks],
    ]
    code = ("import json, sys\nfrom runtime.tools.__main__ import main\n"
            "codes = [main(args) for args in json.loads(sys.argv[1])]\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'torch', 'tractseg'))\n"
            "print(json.dumps({'codes': codes, 'heavy': heavy}))\n")
    if "dipy" not in sys.modules:
        pytest.importorskip("dipy")
    done = run_python(code, json.dumps([[str(a) for a in c] for c in commands]), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result == {"codes": [0] * 5, "heavy": []}, done.stderr[-2000:]
    assert done.stdout.splitlines()[0] == "2.5"  # get_image_spacing's line
    for name in ("FA.nii.gz", "flipped.nii.gz", "rotated.bvecs", "positive.nii.gz"):
        assert (tmp_path / name).is_file()


def test_an_output_may_replace_its_input(tmp_path, capsys):
    """Outputs are written to a temporary name and renamed, so -o may name the input (an uncompressed one is
    memory-mapped while it is replaced)."""
    peaks = peaks_file(tmp_path / "peaks.nii")
    original = nib.load(peaks).get_fdata()
    assert tool(capsys, "flip_peaks", "-i", peaks, "-o", peaks, "-a", "y")[0] == 0
    assert tool(capsys, "remove_negative_values", peaks, peaks)[0] == 0
    expected = original.copy()
    expected[..., 1::3] *= -1
    expected[expected < 0] = 0
    assert np.array_equal(nib.load(peaks).get_fdata(), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["peaks.nii"]
