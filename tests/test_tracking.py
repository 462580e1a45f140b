"""runtime.tracking against upstream TractSeg 2.10's ``Tracking`` on a curved-bundle phantom (real NIfTI files in
upstream's layout), statistically: random seeds differ, so counts, end regions, density-map Dice and mean length.
Plus reproducibility, the three formats, the empty-bundle case and bad input (one line, exit 1, nothing written).
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import binary_dilation

pytest.importorskip("dipy", reason="the [tracking] extra (dipy) is not installed")

from benchmarks.tracking import FULL_SIZE, Phantom, ours_tracking, upstream_tracking, write_phantom  # noqa: E402
from tests.no_jax import run_module, run_python  # noqa: E402
from runtime.tracking import BundleFiles, bundle_rng, read_bundle_inputs  # noqa: E402
from runtime.tracking.__main__ import main  # noqa: E402
from runtime.tracking.prepare import tracking_volumes  # noqa: E402
from runtime.tracking.walker import track_voxels  # noqa: E402

BUNDLE = "CST_right"
N_FIBERS = 800


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tracking")
    write_phantom(root, [BUNDLE, "AF_left"], empty=("AF_left",))
    return root


@pytest.fixture(scope="module")
def upstream(phantom) -> Path:
    pytest.importorskip("tractseg", reason="upstream tractseg (the [parity] extra) is not installed")
    upstream_tracking(phantom / "peaks.nii.gz", phantom / "tractseg_output", [BUNDLE], N_FIBERS, "trk", 2,
                      tracking_dir="upstream")
    return phantom / "tractseg_output" / "upstream" / f"{BUNDLE}.trk"


def _streamlines(path: Path) -> nib.streamlines.ArraySequence:
    return nib.streamlines.load(str(path)).streamlines


def _visited(streamlines, reference: nib.Nifti1Image) -> np.ndarray:
    """Voxels (nearest centre) any streamline point falls in: the binary density map."""
    inverse = np.linalg.inv(reference.affine)
    ijk = np.rint(np.concatenate(list(streamlines)) @ inverse[:3, :3].T + inverse[:3, 3]).astype(int)
    visited = np.zeros(reference.shape, bool)
    visited[tuple(ijk.T)] = True
    return visited


def _mean_length(streamlines) -> float:
    return float(np.mean([np.linalg.norm(np.diff(s, axis=0), axis=1).sum() for s in streamlines]))


def _ends_in(streamlines, beginnings: np.ndarray, endings: np.ndarray, affine: np.ndarray) -> np.ndarray:
    inverse = np.linalg.inv(affine)

    def voxel(p):
        return tuple(np.rint(inverse[:3, :3] @ p + inverse[:3, 3]).astype(int))

    return np.array([(beginnings[voxel(s[0])] and endings[voxel(s[-1])])
                     or (endings[voxel(s[0])] and beginnings[voxel(s[-1])]) for s in streamlines])


def _stored_points(path: Path) -> list[np.ndarray]:
    """The coordinates as the .trk file holds them (no scalars or properties): what nibabel<5's ``trackvis.read``
    returned to upstream's Tractometry."""
    data = path.read_bytes()[1000:]
    points, at = [], 0
    while at < len(data):
        n = int(np.frombuffer(data, "<i4", 1, at)[0])
        points.append(np.frombuffer(data, "<f4", 3 * n, at + 4).reshape(n, 3))
        at += 4 + 12 * n
    return points


def compare_with_upstream(root: Path, ours: Path, theirs: Path, n_fibers: int, dilation: int = 0) -> None:
    """The issue's statistical checks, shared by the phantom test and the full-size one."""
    out = root / "tractseg_output"
    reference = nib.load(str(out / "bundle_segmentations" / f"{BUNDLE}.nii.gz"))
    a, b = _streamlines(ours), _streamlines(theirs)
    assert len(a) == len(b) == n_fibers
    dice = 2 * (_visited(a, reference) & _visited(b, reference)).sum() / (
        _visited(a, reference).sum() + _visited(b, reference).sum())
    assert dice >= 0.9, dice
    assert abs(_mean_length(a) / _mean_length(b) - 1) <= 0.05, (_mean_length(a), _mean_length(b))
    # Written streamlines are smoothed (spline, s=5) after the end check, which can move an end point by a fraction
    # of a voxel: in the file they must lie in the end masks dilated one voxel more than the tracker used.
    masks = [binary_dilation(nib.load(str(out / "endings_segmentations" / f"{BUNDLE}_{e}.nii.gz")).get_fdata() > 0,
                             iterations=dilation + 2) for e in "be"]
    assert _ends_in(a, *masks, reference.affine).all()
    # the bound is fair: upstream's streamlines meet it too, nearly all (its tracker is unseeded, and CI once saw
    # its smoothing move an end point past it in a run with other orientations)
    assert _ends_in(b, *masks, reference.affine).mean() >= 0.95


def test_statistically_equal_to_upstream(phantom, upstream):
    ours_tracking(phantom / "peaks.nii.gz", phantom / "tractseg_output", [BUNDLE], N_FIBERS, "trk",
                  tracking_dir="ours")
    compare_with_upstream(phantom, phantom / "tractseg_output" / "ours" / f"{BUNDLE}.trk", upstream, N_FIBERS)


def test_statistically_equal_to_upstream_in_other_orientations(tmp_path):
    """x negative and y negative (upstream flips y, not x): the same checks, with --tracking_dilation 1."""
    pytest.importorskip("tractseg", reason="upstream tractseg (the [parity] extra) is not installed")
    write_phantom(tmp_path, [BUNDLE], Phantom(signs=(-1, -1, 1)))
    out = tmp_path / "tractseg_output"
    upstream_tracking(tmp_path / "peaks.nii.gz", out, [BUNDLE], N_FIBERS, "trk", 2, "upstream", dilation=1)
    ours_tracking(tmp_path / "peaks.nii.gz", out, [BUNDLE], N_FIBERS, "trk", "ours", dilation=1)
    compare_with_upstream(tmp_path, out / "ours" / f"{BUNDLE}.trk", out / "upstream" / f"{BUNDLE}.trk", N_FIBERS,
                          dilation=1)


def test_every_kept_streamline_runs_between_the_dilated_end_masks(phantom):
    """Before smoothing (the tracker's own output, in its voxel space) every kept streamline starts in one dilated
    end mask and ends in the other, exactly as upstream's rule, for dilation 0 and 1."""
    inputs = read_bundle_inputs(BundleFiles.under(phantom / "tractseg_output", BUNDLE))
    for dilation in (0, 1):
        volumes = tracking_volumes(inputs, dilation)
        start = binary_dilation(inputs.beginnings, iterations=dilation + 1)
        end = binary_dilation(inputs.endings, iterations=dilation + 1)
        result = track_voxels(volumes, 300, bundle_rng(3, BUNDLE))
        assert len(result.streamlines) == 300 and not result.early_stop
        for s in result.streamlines:
            first, last = tuple(np.trunc(s[0]).astype(int)), tuple(np.trunc(s[-1]).astype(int))
            assert (start[first] and end[last]) or (end[first] and start[last])
            assert len(s) >= int(50 / inputs.spacing) * 0.7 / 1.5  # not a stub: at least ~min length in steps


def test_early_stop_rule(phantom, tmp_path):
    """End masks that no streamline can join: stop once more than 100 x nr_fibers seeds were used (upstream's
    rule, checked after each batch of 5,000), with whatever was kept (here nothing)."""
    inputs = read_bundle_inputs(BundleFiles.under(phantom / "tractseg_output", BUNDLE))
    far = np.zeros_like(inputs.endings)
    far[0, 0, 0] = 1
    volumes = tracking_volumes(type(inputs)(inputs.tom, inputs.bundle_mask, inputs.beginnings, far, inputs.affine,
                                            inputs.shape, inputs.spacing), 0)
    result = track_voxels(volumes, 60, bundle_rng(0, BUNDLE))
    assert result.early_stop and result.streamlines == [] and result.seeds_used == 10000  # 5000 <= 6000 < 10000


def test_seeded_runs_reproduce_and_record_the_seed(phantom):
    """Same seed: identical bytes, also when bundles run in worker processes; another seed: other streamlines."""
    out = phantom / "tractseg_output"
    runs = {}
    for name, seed, cpus in (("s7a", 7, 1), ("s7b", 7, 2), ("s8", 8, 1)):  # 2: bundles in worker processes
        assert main(["-i", str(phantom / "peaks.nii.gz"), "-o", str(out), "--bundles", f"{BUNDLE},AF_left",
                     "--nr_fibers", "50", "--tracking_format", "tck", "--tracking_dir", name, "--seed", str(seed),
                     "--nr_cpus", str(cpus), "--quiet"]) == 0
        runs[name] = (out / name / f"{BUNDLE}.tck").read_bytes()
        assert json.loads((out / name / f"{BUNDLE}.tck.json").read_text())["seed"] == seed
    assert runs["s7a"] == runs["s7b"]
    assert runs["s7a"] != runs["s8"]


def test_formats_and_empty_bundle(phantom, capfd):
    """tck / trk / trk_legacy written through nibabel's current API; trk_legacy holds upstream's legacy header
    (|affine| without offset, RAS) and stores RAS mm as trackvis voxmm, as upstream's nibabel<5 writer did. The
    empty bundle gives upstream's empty tractogram (byte-identical to upstream's create_empty_tractogram for trk)
    and one warning line."""
    out = phantom / "tractseg_output"
    mask = nib.load(str(out / "bundle_segmentations" / f"{BUNDLE}.nii.gz"))
    files = {}
    for fmt in ("tck", "trk", "trk_legacy"):
        capfd.readouterr()
        assert main(["-i", str(phantom / "peaks.nii.gz"), "-o", str(out), "--bundles", f"{BUNDLE},AF_left",
                     "--nr_fibers", "40", "--tracking_format", fmt, "--tracking_dir", f"fmt_{fmt}", "--quiet"]) == 0
        warnings = capfd.readouterr().err.strip().splitlines()
        assert len(warnings) == 1 and warnings[0].startswith("tractseg-aot-tracking: warning: AF_left: tract mask empty")
        ext = "trk" if fmt == "trk_legacy" else fmt
        files[fmt] = nib.streamlines.load(str(out / f"fmt_{fmt}" / f"{BUNDLE}.{ext}"))
        assert len(files[fmt].streamlines) == 40
        assert len(nib.streamlines.load(str(out / f"fmt_{fmt}" / f"AF_left.{ext}")).streamlines) == 0
    for a, b in zip(files["tck"].streamlines, files["trk"].streamlines):
        np.testing.assert_allclose(a, b, atol=1e-4)
    legacy = files["trk_legacy"]
    expected = np.abs(mask.affine)
    expected[:3, 3] = 0
    np.testing.assert_allclose(legacy.header["voxel_to_rasmm"], expected, atol=1e-6)
    assert legacy.header["voxel_order"] in (b"RAS", "RAS")
    assert tuple(legacy.header["dimensions"]) == mask.shape
    raw = _stored_points(out / "fmt_trk_legacy" / f"{BUNDLE}.trk")
    assert len(raw) == 40
    for stored, rasmm in zip(raw, files["trk"].streamlines):
        np.testing.assert_allclose(stored, rasmm, atol=1e-3)
    fiber_utils = pytest.importorskip("tractseg.libs.fiber_utils", reason="upstream tractseg is not installed")
    reference = out / "upstream_empty.trk"
    fiber_utils.create_empty_tractogram(str(reference), str(out / "bundle_segmentations" / "AF_left.nii.gz"),
                                        tracking_format="trk")
    assert (out / "fmt_trk" / "AF_left.trk").read_bytes() == reference.read_bytes()


@pytest.mark.parametrize("damage", ["missing TOM", "missing mask", "missing endings", "grid differs",
                                    "unknown bundle"])
def test_bad_input_one_line_exit_1_nothing_written(tmp_path, capfd, damage):
    out = write_phantom(tmp_path, [BUNDLE, "AF_left"], Phantom(shape=(24, 10, 20), ring=7, tube=2))
    bundles = f"AF_left,{BUNDLE}"
    if damage == "missing TOM":
        culprit = out / "TOM" / f"{BUNDLE}.nii.gz"
        culprit.unlink()
    elif damage == "missing mask":
        culprit = out / "bundle_segmentations" / f"{BUNDLE}.nii.gz"
        culprit.unlink()
    elif damage == "missing endings":
        culprit = out / "endings_segmentations" / f"{BUNDLE}_e.nii.gz"
        culprit.unlink()
    elif damage == "grid differs":
        culprit = out / "endings_segmentations" / f"{BUNDLE}_b.nii.gz"
        nib.save(nib.Nifti1Image(np.ones((24, 10, 21), np.uint8), np.eye(4)), str(culprit))
    else:
        culprit, bundles = "--bundles", "CST_middle"
    capfd.readouterr()
    assert main(["-i", str(tmp_path / "peaks.nii.gz"), "-o", str(out), "--bundles", bundles, "--nr_fibers", "20",
                 "--quiet"]) == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"tractseg-aot-tracking: error: {culprit}"), err
    assert not (out / "TOM_trackings").exists()  # AF_left (valid, listed first) was not tracked either


def _small(tmp_path: Path) -> tuple[Path, list[str]]:
    out = write_phantom(tmp_path, [BUNDLE, "AF_left"], Phantom(shape=(24, 10, 20), ring=7, tube=2), empty=("AF_left",))
    return out, ["-i", str(tmp_path / "peaks.nii.gz"), "-o", str(out), "--bundles", f"{BUNDLE},AF_left",
                 "--nr_fibers", "20", "--quiet"]


def test_tracking_folder_that_is_a_file_is_one_line(tmp_path, capfd):
    """Issue 26 item 6: TOM_trackings a file was exit 3 (mkdir's traceback); now one line naming it, exit 1."""
    out, args = _small(tmp_path)
    (out / "TOM_trackings").write_text("not a folder")
    capfd.readouterr()
    assert main(args) == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert err == [f"tractseg-aot-tracking: error: {out / 'TOM_trackings'}: exists and is not a directory"], err


def test_existing_outputs_are_refused_without_force(tmp_path, capfd):
    """Issue 26 item 6: a second run into the same folder used to overwrite the tractograms silently; now one line
    naming the first existing file, exit 1, nothing written; --force replaces them."""
    out, args = _small(tmp_path)
    assert main(args + ["--seed", "1"]) == 0
    folder = out / "TOM_trackings"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert sorted(before) == [f"{b}.tck{j}" for b in ("AF_left", BUNDLE) for j in ("", ".json")]
    capfd.readouterr()
    assert main(args + ["--seed", "2"]) == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert err == [f"tractseg-aot-tracking: error: {folder / (BUNDLE + '.tck')} and 3 more output(s) already exist(s); "
                   "use --force to overwrite"], err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert main(args + ["--seed", "2", "--force"]) == 0
    assert (folder / f"{BUNDLE}.tck").read_bytes() != before[f"{BUNDLE}.tck"]
    assert json.loads((folder / f"{BUNDLE}.tck.json").read_text())["seed"] == 2


def test_trx_holds_the_trk_streamlines_and_the_record(phantom):
    """--tracking_format trx: one .trx per bundle (float32 RAS mm positions, the bundle mask's affine and shape);
    same seed, same streamlines as the .trk within float32 rounding; the sidecar's record in the TRX header; the
    empty bundle an empty .trx."""
    trx_io = pytest.importorskip("trx.trx_file_memmap", reason="trx-python (the [tracking] extra) is not installed")
    out = phantom / "tractseg_output"
    mask = nib.load(str(out / "bundle_segmentations" / f"{BUNDLE}.nii.gz"))
    for fmt in ("trk", "trx"):
        assert main(["-i", str(phantom / "peaks.nii.gz"), "-o", str(out), "--bundles", f"{BUNDLE},AF_left",
                     "--nr_fibers", "200", "--tracking_format", fmt, "--tracking_dir", f"same_{fmt}", "--seed", "4",
                     "--quiet"]) == 0
    trx_path, trk_path = out / "same_trx" / f"{BUNDLE}.trx", out / "same_trk" / f"{BUNDLE}.trk"
    with zipfile.ZipFile(trx_path) as archive:
        assert sorted(archive.namelist()) == ["header.json", "offsets.uint32", "positions.3.float32"]
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
    trx = trx_io.load(str(trx_path))
    try:
        header, streamlines = dict(trx.header), trx.streamlines.copy()
    finally:
        trx.close()
    trk = _streamlines(trk_path)
    assert len(streamlines) == len(trk) == 200
    for a, b in zip(streamlines, trk):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)  # trk stores voxmm float32, trx RAS mm float32
    np.testing.assert_allclose(header["VOXEL_TO_RASMM"], mask.affine, atol=1e-6)
    assert tuple(header["DIMENSIONS"]) == mask.shape
    sidecar = json.loads((out / "same_trx" / f"{BUNDLE}.trx.json").read_text())
    assert header["TRACTSEG_AOT"] == sidecar and sidecar["seed"] == 4 and sidecar["streamlines"] == 200
    assert {k: v for k, v in sidecar.items() if k not in ("seconds", "tracking_format")} == {
        k: v for k, v in json.loads((out / "same_trk" / f"{BUNDLE}.trk.json").read_text()).items()
        if k not in ("seconds", "tracking_format")}
    empty = trx_io.load(str(out / "same_trx" / "AF_left.trx"))
    assert len(empty.streamlines) == 0 and empty.header["TRACTSEG_AOT"]["empty_masks"]
    empty.close()


def test_command_line_as_the_issue_runs_it(phantom):
    """``python -m runtime.tracking ... --bundles CST_right --nr_fibers 2000 --tracking_format trk``, with jax,
    torch, export/ and tractseg blocked from import."""
    out = phantom / "tractseg_output"
    done = run_module("runtime.tracking", "-i", str(phantom / "peaks.nii.gz"), "-o", str(out), "--bundles", BUNDLE,
                      "--nr_fibers", "2000", "--tracking_format", "trk", timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(_streamlines(out / "TOM_trackings" / f"{BUNDLE}.trk")) == 2000
    assert not [p for p in (out / "TOM_trackings").iterdir() if p.name.startswith(".")]  # no temporaries left


def test_missing_dipy_is_one_line_naming_the_extra(phantom, tmp_path):
    block_dipy = ("import sys\nclass _NoDipy:\n    def find_spec(self, name, path=None, target=None):\n"
                  "        if name.split('.')[0] == 'dipy':\n            raise ImportError('no dipy')\n"
                  "sys.meta_path.insert(0, _NoDipy())\n")
    done = run_python(block_dipy + "from runtime.tracking.__main__ import main\nsys.exit(main(sys.argv[1:]))",
                      "-i", str(phantom / "peaks.nii.gz"), "-o", str(tmp_path), timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "tractseg-aot-tracking: error: dipy is not installed; tracking and tractometry need it: "
        "pip install 'tractseg-aot[tracking]'"]


def test_missing_trx_python_is_one_line_naming_the_extra(phantom, tmp_path):
    block_trx = ("import sys\nclass _NoTrx:\n    def find_spec(self, name, path=None, target=None):\n"
                 "        if name.split('.')[0] == 'trx':\n            raise ImportError('no trx')\n"
                 "sys.meta_path.insert(0, _NoTrx())\n")
    done = run_python(block_trx + "from runtime.tracking.__main__ import main\nsys.exit(main(sys.argv[1:]))",
                      "-i", str(phantom / "peaks.nii.gz"), "-o", str(phantom / "tractseg_output"), "--bundles", BUNDLE,
                      "--tracking_format", "trx", "--tracking_dir", "no_trx", timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "tractseg-aot-tracking: error: trx-python is not installed; --tracking_format trx needs it: pip install "
        "'tractseg-aot[tracking]' (or pip install trx-python)"]
    assert not (phantom / "tractseg_output" / "no_trx").exists()


@pytest.mark.fullsize
def test_full_size_bundle_statistically_equal_to_upstream(tmp_path):
    """A 145x174x145, 1.25 mm grid with one curved bundle, 2,000 streamlines each (upstream: ~1-2 min here)."""
    pytest.importorskip("tractseg", reason="upstream tractseg (the [parity] extra) is not installed")
    write_phantom(tmp_path, [BUNDLE], FULL_SIZE)
    out = tmp_path / "tractseg_output"
    upstream_tracking(tmp_path / "peaks.nii.gz", out, [BUNDLE], 2000, "trk", tracking_dir="upstream")
    ours_tracking(tmp_path / "peaks.nii.gz", out, [BUNDLE], 2000, "trk", tracking_dir="ours")
    compare_with_upstream(tmp_path, out / "ours" / f"{BUNDLE}.trk", out / "upstream" / f"{BUNDLE}.trk", 2000)


def test_a_misspelled_bundle_gets_a_did_you_mean():
    from runtime.errors import InputError
    from runtime.tracking.api import parse_bundles

    with pytest.raises(InputError, match=r"invalid bundle name: CST_lft \(did you mean CST_left\?\)"):
        parse_bundles("AF_left,CST_lft")
    assert parse_bundles("CST_left,AF_left") == ["CST_left", "AF_left"]
