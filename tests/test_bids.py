"""runtime.bids: finding DWIs by BIDS rules in real folder trees, derivative names (and the entity order of the
BEP016 / BEP046 proposals they follow), dataset_description.json, the command line's plan and one-line errors, and
its Boutiques descriptor (validated by ``bosh``)."""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from runtime.bids import (BidsDwi, bids_labels, dataset_description, derivative_name, ending_name, find_dwis,
                          find_scalar_map, mask_name, parse_name, peaks_name, probseg_name, tract_entities,
                          tractogram_name, tractometry_name, write_dataset_description)
from runtime.errors import InputError, OutputError
from runtime.models.bundles import TRACTQUERIER_BUNDLES

REPO = Path(__file__).resolve().parent.parent


def _nifti(path: Path, shape=(4, 4, 3, 7)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)).to_filename(path)
    return path


def _dwi(root: Path, rel: str, gradients: bool = True) -> Path:
    dwi = _nifti(root / rel)
    if gradients:
        stem = str(dwi)[: -len(".nii.gz")]
        Path(stem + ".bval").write_text("0 1000 1000 1000 1000 1000 1000\n")
        Path(stem + ".bvec").write_text("0 1 0 0 1 1 0\n0 0 1 0 1 0 1\n0 0 0 1 0 1 1\n")
    return dwi


@pytest.fixture()
def dataset(tmp_path) -> Path:
    """sub-01: no sessions, two runs; sub-02: ses-a and ses-b, ses-b with a derivatives brain mask;
    sub-03: bval/bvec inherited from the dataset root; plus decoys that are not DWIs."""
    root = tmp_path / "bids"
    root.mkdir()
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.10.0"}')
    _dwi(root, "sub-01/dwi/sub-01_run-1_dwi.nii.gz")
    _dwi(root, "sub-01/dwi/sub-01_run-2_dwi.nii.gz")
    _nifti(root / "sub-01/anat/sub-01_T1w.nii.gz", (4, 4, 3))
    _dwi(root, "sub-02/ses-a/dwi/sub-02_ses-a_acq-hardi_dwi.nii.gz")
    _dwi(root, "sub-02/ses-b/dwi/sub-02_ses-b_dwi.nii.gz")
    _nifti(root / "derivatives/masks/sub-02/ses-b/dwi/sub-02_ses-b_space-orig_desc-brain_mask.nii.gz", (4, 4, 3))
    _nifti(root / "derivatives/masks/sub-02/ses-b/dwi/sub-02_ses-b_space-T1w_desc-brain_mask.nii.gz", (4, 4, 3))
    _dwi(root, "sub-03/dwi/sub-03_dwi.nii.gz", gradients=False)
    (root / "dwi.bval").write_text("0 1000 1000 1000 1000 1000 1000\n")
    (root / "dwi.bvec").write_text("0 1 0 0 1 1 0\n0 0 1 0 1 0 1\n0 0 0 1 0 1 1\n")
    (root / "sub-03/dwi/sub-03_dwi.json").write_text("{}")
    return root


def test_find_every_dwi(dataset):
    found = find_dwis(dataset)
    assert [d.name for d in found] == ["sub-01_run-1", "sub-01_run-2", "sub-02_ses-a_acq-hardi", "sub-02_ses-b",
                                      "sub-03"]
    by_name = {d.name: d for d in found}
    assert by_name["sub-01_run-2"].bval == dataset / "sub-01/dwi/sub-01_run-2_dwi.bval"
    assert by_name["sub-02_ses-a_acq-hardi"].session == "a" and by_name["sub-02_ses-a_acq-hardi"].brain_mask is None
    assert by_name["sub-02_ses-b"].brain_mask == (
        dataset / "derivatives/masks/sub-02/ses-b/dwi/sub-02_ses-b_space-orig_desc-brain_mask.nii.gz")
    assert by_name["sub-03"].bval == dataset / "dwi.bval" and by_name["sub-03"].bvec == dataset / "dwi.bvec"
    assert by_name["sub-02_ses-b"].output_dir(Path("/o")) == Path("/o/sub-02/ses-b/dwi")
    assert by_name["sub-01_run-1"].output_dir(Path("/o")) == Path("/o/sub-01/dwi")


def test_inheritance_prefers_the_most_specific(dataset):
    (dataset / "sub-03/sub-03_dwi.bval").write_text("0 1000 1000 1000 1000 1000 1000\n")
    found = find_dwis(dataset, ["03"])
    assert found[0].bval == dataset / "sub-03/sub-03_dwi.bval" and found[0].bvec == dataset / "dwi.bvec"


def test_labels_filter_with_or_without_prefix(dataset):
    assert [d.name for d in find_dwis(dataset, ["sub-02", "01"])] == [
        "sub-02_ses-a_acq-hardi", "sub-02_ses-b", "sub-01_run-1", "sub-01_run-2"]
    assert [d.name for d in find_dwis(dataset, None, ["ses-b"])] == ["sub-02_ses-b"]


@pytest.mark.parametrize("participants, sessions, expected", [
    (["05"], None, "no sub-05 (sub labels here: 01, 02, 03)"),
    (None, ["c"], "no ses-c (ses labels here: a, b)"),
])
def test_unknown_labels_are_one_line(dataset, participants, sessions, expected):
    with pytest.raises(InputError) as caught:
        find_dwis(dataset, participants, sessions)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_missing_bvec_and_not_bids(dataset, tmp_path):
    (dataset / "sub-01/dwi/sub-01_run-2_dwi.bvec").unlink()
    assert find_dwis(dataset, ["01"])[1].bvec == dataset / "dwi.bvec"  # the dataset-level one is inherited
    (dataset / "dwi.bvec").unlink()
    series = find_dwis(dataset, ["01"])  # that series alone carries the problem; the other one can run
    assert series[0].problem is None and "sub-01_run-2_dwi.nii.gz: no .bvec file" in series[1].problem
    (dataset / "dataset_description.json").unlink()
    with pytest.raises(InputError, match="no dataset_description.json"):
        find_dwis(dataset, ["02"])
    assert len(find_dwis(dataset, ["02"], require_description=False)) == 2
    with pytest.raises(InputError, match="BIDS folder not found"):
        find_dwis(tmp_path / "nope")


def test_two_masks_are_refused(dataset):
    _nifti(dataset / "derivatives/other/sub-02/ses-b/dwi/sub-02_ses-b_desc-brain_mask.nii.gz", (4, 4, 3))
    assert "more than one brain mask" in find_dwis(dataset, ["02"], ["b"])[0].problem


def test_parse_name():
    assert parse_name("sub-01_ses-1_acq-x_run-2_dwi.nii.gz") == ({"sub": "01", "ses": "1", "acq": "x", "run": "2"},
                                                                "dwi")
    assert parse_name("sub-01_run-1_run-2_dwi.nii.gz") is None
    assert parse_name("sub-01_bad_dwi.nii.gz") is None


def test_derivative_names():
    assert mask_name("sub-01", "CST_left") == "sub-01_space-orig_label-CSTleft_mask.nii.gz"
    assert probseg_name("sub-01_ses-1", "CC_1") == "sub-01_ses-1_space-orig_label-CC1_probseg.nii.gz"
    assert ending_name("sub-01", "SLF_I_left_b") == "sub-01_space-orig_label-SLFIleft_desc-beginnings_mask.nii.gz"
    assert ending_name("sub-01", "CA_e") == "sub-01_space-orig_label-CA_desc-endings_mask.nii.gz"
    with pytest.raises(ValueError):
        derivative_name("sub-01", "mask", label="CST_left")
    labels = bids_labels(TRACTQUERIER_BUNDLES)
    assert len(set(labels.values())) == len(TRACTQUERIER_BUNDLES) == 72
    for name, label in labels.items():  # every derivative name parses back to its entities
        entities, suffix = parse_name(mask_name("sub-01_run-1", name))
        assert suffix == "mask" and entities == {"sub": "01", "run": "1", "space": "orig", "label": label}
    with pytest.raises(ValueError, match="both become BIDS label"):
        bids_labels(["CST_left", "CSTleft"])


def test_dataset_description(tmp_path):
    description = dataset_description("0.1.0", peaks_engine="mrtrix")
    path = write_dataset_description(tmp_path, description)
    written = json.loads(path.read_text())
    assert written["DatasetType"] == "derivative" and written["BIDSVersion"]
    assert written["GeneratedBy"][0]["Name"] == "tractseg-aot" and written["GeneratedBy"][0]["Version"] == "0.1.0"
    write_dataset_description(tmp_path, description)  # ours: replaced
    path.write_text(json.dumps({"Name": "x", "GeneratedBy": [{"Name": "fmriprep"}]}))
    with pytest.raises(OutputError, match="not written by tractseg-aot"):
        write_dataset_description(tmp_path, description)
    assert json.loads(path.read_text())["GeneratedBy"][0]["Name"] == "fmriprep"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime.bids", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_cli_plan_and_errors(dataset, tmp_path):
    out = tmp_path / "out"
    done = _cli(str(dataset), str(out), "participant", "--participant_label", "02", "--session-label", "b",
                "--print-plan")
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    assert rows == [["sub-02_ses-b", str(dataset / "sub-02/ses-b/dwi/sub-02_ses-b_dwi.nii.gz"),
                     str(dataset / "sub-02/ses-b/dwi/sub-02_ses-b_dwi.bval"),
                     str(dataset / "sub-02/ses-b/dwi/sub-02_ses-b_dwi.bvec"),
                     str(dataset / "derivatives/masks/sub-02/ses-b/dwi"
                                   / "sub-02_ses-b_space-orig_desc-brain_mask.nii.gz")]]
    done = _cli(str(dataset), str(out), "participant", "--participant_label", "sub-09")
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "no sub-09" in done.stderr
    done = _cli(str(dataset), str(dataset), "participant")
    assert done.returncode == 1 and "the output folder is the BIDS folder itself" in done.stderr
    assert not out.exists()


def test_plan_is_a_library_call(dataset, tmp_path):
    from runtime.bids.app import plan

    series: list[BidsDwi] = plan(dataset, tmp_path / "o", ["sub-01"])  # a label with or without sub-
    assert [d.name for d in series] == ["sub-01_run-1", "sub-01_run-2"]
    assert [d.name for d in plan(dataset, tmp_path / "o", ["01"])] == ["sub-01_run-1", "sub-01_run-2"]


# -- issue 30: BEP016 / BEP046 names, the entity order they follow, the Boutiques descriptor --------------------------

# The entity order a name must follow (suffix last): the source entities in BIDS 1.10's order
# (src/schema/rules/entities.yaml), then the derivative entities: ``space`` (BIDS), ``model``, ``param`` (BEP016:
# ``[_space-]_model-_param-_dwimap``; QSIRecon writes the same), ``tract``, ``hemi``, ``track`` (BEP046:
# ``[_space-][_tract-][_track-]_tractogram.trx``, its example ``_tract-ArcuateFasciculus_hemi-L_track-eudx``), then
# ``label`` and ``desc`` (BIDS). Two places where the texts disagree, neither touching a name we write: BIDS puts
# ``hemi`` before ``space`` (BEP046's example after ``tract``), and BEP016's draft puts an optional ``desc`` between
# ``model`` and ``param`` (QSIRecon after ``param``); we write no ``desc`` on a dwimap.
SOURCE_ORDER = ["sub", "ses", "sample", "task", "tracksys", "acq", "nuc", "voi", "ce", "trc", "stain", "rec", "dir",
                "run", "mod", "echo", "flip", "inv", "mt", "part", "proc"]
DERIVED_ORDER = ["space", "model", "param", "tract", "hemi", "track", "label", "desc"]
TEMPLATES = {  # suffix -> (extension, required derived entities, optional ones)
    "mask": (".nii.gz", {"space", "label"}, {"desc"}),
    "probseg": (".nii.gz", {"space", "label"}, set()),
    "dwimap": (".nii.gz", {"space", "model", "param"}, set()),
    "tractogram": (".trx", {"space", "tract", "track"}, {"hemi"}),
    "tractometry": (".csv", {"space", "model", "param", "track"}, set()),
}


def check_name(name: str) -> None:
    """``name`` (a data file or its ``.json`` sidecar) follows the proposals' entity order and its template."""
    stem, _, extension = name.partition(".")
    parsed = parse_name(name)
    assert parsed is not None, name
    entities, suffix = parsed
    assert suffix in TEMPLATES, name
    assert f".{extension}" in (TEMPLATES[suffix][0], ".json"), name
    keys = list(entities)
    source = [k for k in keys if k in SOURCE_ORDER]
    derived = [k for k in keys if k not in SOURCE_ORDER]
    assert keys == source + derived and keys[0] == "sub", name  # source entities first, sub leading
    assert source == sorted(source, key=SOURCE_ORDER.index), name
    assert all(k in DERIVED_ORDER for k in derived) and derived == sorted(derived, key=DERIVED_ORDER.index), name
    _, required, optional = TEMPLATES[suffix]
    assert required <= set(derived) <= required | optional, name
    assert stem.endswith(f"_{suffix}") and entities["space"] == "orig", name
    assert entities.get("hemi") in (None, "L", "R") and entities.get("track") in (None, "tractseg"), name


@pytest.mark.parametrize("source", ["sub-01", "sub-01_ses-1_acq-hardi_dir-AP_run-2"])
def test_every_name_follows_the_proposals_entity_order(source):
    names = [peaks_name(source), tractometry_name(source, "tensor", "fa")]
    for bundle in TRACTQUERIER_BUNDLES:
        names += [mask_name(source, bundle), probseg_name(source, bundle), tractogram_name(source, bundle),
                  ending_name(source, f"{bundle}_b"), ending_name(source, f"{bundle}_e")]
    for name in names:
        check_name(name)
        check_name(name.split(".")[0] + ".json")
    assert peaks_name(source) == f"{source}_space-orig_model-csd_param-peaks_dwimap.nii.gz"
    assert tractogram_name(source, "CST_left") == f"{source}_space-orig_tract-CST_hemi-L_track-tractseg_tractogram.trx"
    assert tractogram_name(source, "CC_1") == f"{source}_space-orig_tract-CC1_track-tractseg_tractogram.trx"
    assert tractometry_name(source, "tensor", "fa") == (
        f"{source}_space-orig_model-tensor_param-fa_track-tractseg_tractometry.csv")
    assert len(set(names)) == len(names)  # one name per file: (tract, hemi) is unique over the 72 bundles
    assert tract_entities("SLF_I_right") == ("SLFI", "R") and tract_entities("CA") == ("CA", None)


def test_scalar_map_rules(dataset):
    series = {d.name: d for d in find_dwis(dataset)}
    folder = dataset / "derivatives/dti/sub-02/ses-b/dwi"
    with pytest.raises(InputError, match=r"no scalar map sub-02_ses-b\[_space-orig\]_model-<model>_param-fa"):
        find_scalar_map(dataset, series["sub-02_ses-b"], "fa")
    _nifti(folder / "sub-02_ses-b_space-T1w_model-tensor_param-fa_dwimap.nii.gz", (4, 4, 3))  # another grid
    _nifti(folder / "sub-02_ses-b_model-tensor_param-md_dwimap.nii.gz", (4, 4, 3))  # another parameter
    _nifti(folder / "sub-02_ses-b_param-fa_dwimap.nii.gz", (4, 4, 3))  # no model: not BEP016
    fa = _nifti(folder / "sub-02_ses-b_space-orig_model-tensor_param-fa_dwimap.nii.gz", (4, 4, 3))
    assert find_scalar_map(dataset, series["sub-02_ses-b"], "fa") == fa
    _nifti(dataset / "derivatives/dki/sub-02/ses-b/dwi/sub-02_ses-b_model-dki_param-fa_dwimap.nii", (4, 4, 3))
    with pytest.raises(InputError, match="2 scalar maps") as caught:
        find_scalar_map(dataset, series["sub-02_ses-b"], "fa")
    assert "\n" not in str(caught.value)


def test_dataset_description_lists_the_kinds(tmp_path):
    text = dataset_description("0.1.0", kinds=["mask", "peaks", "tractogram"])["GeneratedBy"][0]["Description"]
    assert "_model-csd_param-peaks_dwimap.nii.gz" in text and "_track-tractseg_tractogram.trx" in text
    assert "_label-<bundle>_mask.nii.gz" in text and "tractometry" not in text


def test_chain_flags(dataset, tmp_path, capsys):
    from runtime.bids.__main__ import parse_args

    base = [str(dataset), str(tmp_path / "out"), "participant"]
    args, options, chain = parse_args([*base, "--chain", "--scalar-param", "fa", "--bundles", "CST_left",
                                       "--artifacts-root", str(tmp_path)])
    assert chain is not None and chain.tracking.tracking_format == "trx" and chain.bundles == ("CST_left",)
    assert args.scalar_param == "fa" and options.per_subject.raw is not None
    assert parse_args(base)[2] is None
    for bad, needle in ((["--scalar-param", "fa"], "--scalar-param is for --chain"),
                        (["--chain", "--artifacts", str(tmp_path)], "--chain runs three bundles"),
                        (["--chain", "--tracking_format", "tck"], "unrecognized arguments: --tracking_format"),
                        (["--chain", "--scalar-param", "f_a"], "a BIDS label")):
        with pytest.raises(SystemExit) as caught:
            parse_args([*base, *bad])
        err = capsys.readouterr().err
        assert caught.value.code == 2 and needle in err, err


def test_boutiques_descriptor(dataset, tmp_path):
    """``--boutiques`` prints a descriptor made from the parser: every flag is in it, ``bosh validate --bids``
    accepts it, and ``bosh exec simulate`` turns an invocation into a command line the App's parser takes."""
    pytest.importorskip("boutiques", reason="boutiques (the [test] extra) is not installed")
    from runtime.bids.__main__ import build_parser, parse_args

    done = _cli("--boutiques")
    assert done.returncode == 0, done.stderr
    descriptor = json.loads(done.stdout)
    ids = {entry["id"] for entry in descriptor["inputs"]}
    dests = {a.dest for a in build_parser()._actions if argparse.SUPPRESS not in (a.help, a.dest) and a.dest != "help"}
    assert dests - {"output_dir"} <= ids and "boutiques" not in ids
    path = tmp_path / "tractseg-aot-bids.json"
    path.write_text(done.stdout)
    bosh = str(Path(sys.executable).with_name("bosh"))
    checked = subprocess.run([bosh, "validate", "--bids", str(path)], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0 and "BIDS validation OK" in checked.stdout, checked.stdout + checked.stderr
    invocation = tmp_path / "invocation.json"
    invocation.write_text(json.dumps({"bids_dir": str(dataset), "output_dir_name": str(tmp_path / "out"),
                                      "analysis_level": "participant", "participant_label": ["01", "sub-02"],
                                      "session_label": ["b"], "chain": True, "scalar_param": "fa",
                                      "nr_fibers": 30, "peaks_engine": "dipy", "workers": 0}))
    simulated = subprocess.run([bosh, "exec", "simulate", str(path), "-i", str(invocation)], capture_output=True,
                               text=True, timeout=120, cwd=tmp_path)
    assert simulated.returncode == 0, simulated.stdout + simulated.stderr
    command = simulated.stdout.split("Generated Command:", 1)[1].strip()
    mkdir, _, app = command.partition("; ")
    assert mkdir == f"mkdir -p {tmp_path / 'out'}" and app.startswith("tractseg-aot-bids ")
    args, options, chain = parse_args(shlex.split(app)[1:])
    assert (args.bids_dir, args.analysis_level, args.participant_label) == (dataset, "participant", ["01", "sub-02"])
    assert chain is not None and chain.tracking.nr_fibers == 30 and args.scalar_param == "fa"
    assert options.workers == 0 and options.per_subject.raw.peaks_engine == "dipy"


def test_uncertainty_and_renamed_folders_become_derivatives(dataset, tmp_path):
    """--uncertainty's maps are linked as ``desc-uncertainty`` probseg variants with a sidecar that says what they
    are; a renamed --tract_segmentation_output_dir is still found."""
    from runtime.bids.derivatives import derivative_links
    from runtime.options import InferenceOptions, RawInputOptions, RunOptions, SaveOptions, UncertaintyOptions

    series = next(s for s in find_dwis(dataset) if s.name == "sub-01_run-1")
    subject = tmp_path / "run" / "sub-01_run-1"
    _nifti(subject / "bundle_uncertainties" / "CST_left.nii.gz", (4, 4, 3))
    _nifti(subject / "segs" / "CA.nii.gz", (4, 4, 3))
    options = RunOptions(raw=RawInputOptions(), save=SaveOptions(tract_dir="segs"),
                         inference=InferenceOptions(uncertainty=UncertaintyOptions(seed=3)))
    made = derivative_links(series, subject, tmp_path / "out", options, dataset)
    names = sorted(p.name for p in made)
    assert "sub-01_run-1_space-orig_label-CSTleft_desc-uncertainty_probseg.nii.gz" in names
    assert "sub-01_run-1_space-orig_label-CA_mask.nii.gz" in names
    sidecar = json.loads(next(p for p in made if p.name.endswith("desc-uncertainty_probseg.json")).read_text())
    assert "standard deviation of 30 Monte Carlo dropout" in sidecar["Description"] and "seeded with 3" in \
        sidecar["Description"]
    entities, suffix = parse_name("sub-01_run-1_space-orig_label-CSTleft_desc-uncertainty_probseg.nii.gz")
    assert suffix == "probseg" and entities["desc"] == "uncertainty"
