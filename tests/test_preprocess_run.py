"""``tractseg-aot --preprocess`` end to end (issue 27): the run registers the subject to an MNI FA template,
segments there and writes every output on the input's grid and affine; the run report holds the transform.
A synthetic template (the subject's own first-peak length: the registration must find the identity)."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from benchmarks.orientation import arc_tract_peaks
from runtime.preprocess import subject_fa_like
from runtime.run import main

pytest.importorskip("dipy", reason="the [diffusion] extra (dipy) is not installed")


def _masks(folder):
    return {p.name: nib.load(p) for p in sorted((folder / "bundle_segmentations").iterdir())}


def test_preprocess_runs_in_mni_space_and_writes_on_the_input_grid(tract_small, tmp_path, capsys):
    data, affine = arc_tract_peaks()
    peaks = tmp_path / "peaks.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), peaks)
    template = tmp_path / "template.nii.gz"
    nib.save(nib.Nifti1Image(subject_fa_like(data, affine), affine), template)
    base = [str(peaks), "--artifacts", str(tract_small), "--quiet"]
    assert main([*base, "-o", str(tmp_path / "plain")]) == 0
    code = main([*base, "-o", str(tmp_path / "mni"), "--preprocess", "--mni-template", str(template),
                 "--report", str(tmp_path / "report.json")])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "report.json").read_text())
    transform = np.asarray(report["preprocess"]["subject_to_mni"])
    angle = np.degrees(np.arccos(np.clip((np.trace(transform[:3, :3]) - 1) / 2, -1, 1)))
    assert angle < 1.0 and np.linalg.norm(transform[:3, 3]) < 1.0, transform
    plain, moved = _masks(tmp_path / "plain"), _masks(tmp_path / "mni")
    assert plain.keys() == moved.keys() and len(moved) == 72
    for name, image in moved.items():  # on the input's grid, with upstream's dtype
        assert image.shape == data.shape[:3] and np.allclose(image.affine, affine), name
        assert image.get_data_dtype() == plain[name].get_data_dtype()
    a = np.stack([np.asarray(image.dataobj) > 0 for image in plain.values()])
    b = np.stack([np.asarray(image.dataobj) > 0 for image in moved.values()])
    assert a.sum() > 0 and 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.9  # the same run up to resampling


def test_preprocess_refusals_are_one_line(tract_small, tmp_path, capsys):
    data, affine = arc_tract_peaks()
    peaks = tmp_path / "peaks.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), peaks)
    code = main([str(peaks), "-o", str(tmp_path / "out"), "--artifacts", str(tract_small), "--quiet",
                 "--preprocess", "--mni-template", str(tmp_path / "missing.nii.gz")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "missing.nii.gz: --mni-template: no such file" in err, err
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as refused:
        main([str(peaks), "--output_type", "TOM", "--preprocess"])
    assert refused.value.code == 2 and "--preprocess is not supported for --output_type TOM" in \
        capsys.readouterr().err
