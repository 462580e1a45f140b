"""runtime.preprocess (``--preprocess`` without FSL): rigid registration to an FA template, peaks to MNI and outputs
back to the subject. Synthetic templates only (never the network); the real example peaks where present."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from benchmarks.preprocess import brain_points, centred_affine, moved_image, padded, rigid, synthetic_fa
from runtime.errors import InputError
from runtime.preprocess import (TEMPLATE_SHA256, bvecs_rotation, dwi_fa, dwi_to_mni, find_template, load_template,
                                mni_grid, peaks_to_mni, register_rigid, rigid_difference, rotate_bvecs,
                                subject_fa_like, to_mni, to_subject)
from runtime.preprocess import template as template_module
from runtime.preprocess.bvecs import _fsl_frame
from tests.no_jax import run_python

pytest.importorskip("dipy")
MOTIONS = [((1, 2, 3), 15.0, (6.0, -8.0, 4.0)), ((-2, 1, 1), -12.0, (-10.0, 3.0, 5.0))]
CUBE = np.ones((3, 3, 3), dtype=bool)  # all 26 neighbours: every trilinear corner
UPSTREAM_TEMPLATE_AFFINE = np.array([[-1.25, 0, 0, 90], [0, 1.25, 0, -126], [0, 0, 1.25, -72], [0, 0, 0, 1]])


def unit(*v: float) -> np.ndarray:
    return np.asarray(v, dtype=np.float64) / np.linalg.norm(v)


@pytest.mark.parametrize("motion", MOTIONS)
def test_known_rigid_motions_are_recovered(motion):
    """A subject on another grid (RAS, other shape and origin) seeing the template moved by up to 15 degrees and
    10 mm: the registration returns the motion within 1 degree and 1 mm anywhere in the brain."""
    shape = (40, 48, 40)
    template_affine = centred_affine(shape, 3.0)
    template = synthetic_fa(shape)
    subject_affine = centred_affine((44, 50, 42), 3.0, las=False)
    subject_affine[:3, 3] += [4.0, -3.0, 2.0]
    truth = rigid(*motion)
    subject = moved_image(template, template_affine, truth, subject_affine, (44, 50, 42))
    found = register_rigid(subject, subject_affine, template, template_affine)
    degrees, mm = rigid_difference(found, truth, brain_points(template, template_affine))
    assert degrees < 1.0 and mm < 1.0, (degrees, mm)
    assert np.allclose(found[3], [0, 0, 0, 1]) and np.allclose(found[:3, :3] @ found[:3, :3].T, np.eye(3))


def test_real_peaks_motion_is_recovered(example_peaks_path):
    """The example peaks, moved 15 degrees and 10 mm with the library's own peak resampling, registered back to a
    template made from the unmoved subject's first-peak length."""
    import nibabel as nib

    image = nib.load(example_peaks_path)
    peaks = np.nan_to_num(np.asarray(image.dataobj, dtype=np.float32))
    truth = rigid((1, 2, 3), 15.0, (6.0, -8.0, 5.0))
    grid = padded(image.affine, peaks.shape, 8)
    moved = peaks_to_mni(peaks, image.affine, np.linalg.inv(truth), *grid)
    template = subject_fa_like(peaks, image.affine)
    found = register_rigid(subject_fa_like(moved, grid[0]), grid[0], template, image.affine)
    degrees, mm = rigid_difference(found, truth, brain_points(template, image.affine))
    assert degrees < 1.0 and mm < 1.0, (degrees, mm)


def crossing_peaks(shape=(24, 28, 24), seed=0):
    """Fibre A everywhere in an ellipsoid, fibre B crossing it in the x >= half region; amplitudes 0.45-0.55
    (so the two swap order from voxel to voxel) and random signs, as MRtrix writes them."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"), axis=-1)
    brain = np.sum(grid ** 2, axis=-1) <= 0.9
    crossing = brain & (grid[..., 0] >= 0)
    a, b = unit(1, 0.3, 0.2), unit(-0.2, 1, 0.4)
    amp_a = rng.uniform(0.45, 0.55, shape) * brain
    amp_b = rng.uniform(0.45, 0.55, shape) * crossing
    va = (amp_a * rng.choice([-1, 1], shape))[..., None] * a
    vb = (amp_b * rng.choice([-1, 1], shape))[..., None] * b
    a_first = (amp_a >= amp_b)[..., None]
    peaks = np.zeros((*shape, 9), dtype=np.float32)
    peaks[..., 0:3] = np.where(a_first, va, vb)
    peaks[..., 3:6] = np.where(a_first, vb, va)
    return peaks, brain, crossing, a, b


def worst_angle(vectors: np.ndarray, directions: list[np.ndarray]) -> float:
    """Largest angle (degrees) from each vector to the closest of ``directions``, sign-free."""
    unitv = vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)
    cos = np.max(np.abs(np.stack([unitv @ d for d in directions])), axis=0)
    return float(np.degrees(np.arccos(np.clip(cos.min(), -1, 1))))


def test_peaks_to_mni_and_back_rotate_and_keep_the_field():
    peaks, brain, crossing, a, b = crossing_peaks()
    affine = centred_affine(brain.shape, 2.5)
    s2m = rigid((1, 2, 3), 15.0, (3.0, -4.0, 2.0))
    rotation = s2m[:3, :3]
    mni_affine, mni_shape = centred_affine((28, 32, 28), 2.5), (28, 32, 28)
    mni = peaks_to_mni(peaks, affine, s2m, mni_affine, mni_shape)
    deep = to_mni(ndimage.binary_erosion(crossing, CUBE).astype(np.uint8), "mask", affine, s2m, mni_affine,
                  mni_shape).astype(bool)
    assert deep.sum() > 200
    moved = [rotation @ a, rotation @ b]
    assert worst_angle(mni[deep][:, 0:3], moved) < 2.0 and worst_angle(mni[deep][:, 3:6], moved) < 2.0
    first, second = mni[deep][:, 0:3], mni[deep][:, 3:6]
    assert np.all(np.abs(np.abs(first @ moved[0]) - np.abs(second @ moved[0])) > 0.3)  # one of each fibre
    lengths = np.linalg.norm(mni[deep].reshape(-1, 3, 3), axis=-1)
    assert np.all((lengths[:, :2] > 0.44) & (lengths[:, :2] < 0.56)) and np.all(lengths[:, 0] >= lengths[:, 1])
    # per-channel trilinear interpolation (what sign-aware matching replaces) cancels and mixes the fibres
    naive = np.stack([ndimage.affine_transform(peaks[..., c], np.linalg.inv(affine) @ np.linalg.inv(s2m) @ mni_affine,
                                               output_shape=mni_shape, order=1) for c in range(9)], axis=-1)
    assert worst_angle(naive[deep][:, 0:3], moved) > 30.0
    back = to_subject(mni, "vectors", affine, peaks.shape, s2m, mni_affine)
    inner = ndimage.binary_erosion(crossing, CUBE, iterations=2)
    for k in (0, 3):
        assert worst_angle(back[inner][:, k:k + 3], [a, b]) < 2.0
    original = np.sort(np.linalg.norm(peaks[inner].reshape(-1, 3, 3), axis=-1), axis=1)
    returned = np.sort(np.linalg.norm(back[inner].reshape(-1, 3, 3), axis=-1), axis=1)
    assert np.abs(original - returned).max() < 0.07  # amplitudes within the 0.45-0.55 spread


def test_identity_leaves_peaks_and_a_tom_rotates_back():
    peaks, brain, *_ = crossing_peaks((12, 14, 12))
    affine = centred_affine(brain.shape, 2.5)
    assert np.allclose(peaks_to_mni(peaks, affine, np.eye(4), affine, brain.shape), peaks, atol=1e-6)
    with_nan = np.where(brain[..., None], peaks, np.nan)  # MRtrix: NaN outside the brain
    for interpolation in ("linear", "nearest"):
        moved = peaks_to_mni(with_nan, affine, rigid((0, 1, 0), 7.0, (1, 0, 0)), affine, brain.shape,
                             interpolation=interpolation)
        assert np.isfinite(moved).all() and np.isnan(with_nan).any()
    s2m = rigid((0, 0, 1), 30.0, (0, 0, 0))
    tom = np.zeros((10, 10, 10, 3), dtype=np.float32)
    tom[...] = unit(1, 0, 0)
    mni_affine = centred_affine((10, 10, 10), 2.5)
    back = to_subject(tom, "vectors", centred_affine((6, 6, 6), 2.5), (6, 6, 6), s2m, mni_affine)
    assert np.allclose(back, s2m[:3, :3].T @ unit(1, 0, 0), atol=1e-6)


def test_masks_back_to_subject_are_nearest_neighbour():
    rng = np.random.default_rng(1)
    affine = centred_affine((20, 22, 18), 2.5)
    smooth = ndimage.gaussian_filter(rng.random((20, 22, 18, 5)), (3, 3, 3, 0))
    masks = (smooth > np.median(smooth)).astype(np.uint8)
    same = to_subject(masks, "mask", affine, masks.shape, np.eye(4), affine)
    assert same.dtype == np.uint8 and np.array_equal(same, masks)  # grid-aligned identity: exact
    shift = np.eye(4)
    shift[:3, 3] = [5.0, 0, 0]  # two voxels along world x, which is -i on LAS
    moved = to_subject(masks, "mask", affine, masks.shape, shift, affine)
    assert np.array_equal(moved[2:], masks[:-2]) and not moved[:2].any()
    s2m = rigid((1, 1, 0), 10.0, (1.3, -0.7, 2.1))
    turned = to_subject(masks, "mask", affine, masks.shape, s2m, affine)
    assert set(np.unique(turned)) <= {0, 1}
    voxel = np.argwhere(np.ones(masks.shape[:3], dtype=bool))  # each takes the value of its nearest source voxel
    source = np.rint(voxel @ (np.linalg.inv(affine) @ s2m @ affine)[:3, :3].T
                     + (np.linalg.inv(affine) @ s2m @ affine)[:3, 3]).astype(int)
    inside = np.all((source >= 0) & (source < masks.shape[:3]), axis=1)
    assert np.array_equal(turned[tuple(voxel[inside].T)], masks[tuple(source[inside].T)])
    assert not turned[tuple(voxel[~inside].T)].any()
    linear = to_subject(masks.astype(np.float32), "linear", affine, masks.shape, s2m, affine)
    assert linear.dtype == np.float32 and linear.min() >= 0 and linear.max() <= 1 + 1e-6


def test_mni_grid_is_flirt_applyisoxfm():
    affine, shape = mni_grid(UPSTREAM_TEMPLATE_AFFINE, (145, 174, 145), np.diag([-2.5, 2.5, 2.5, 1.0]))
    assert shape == (73, 87, 73)  # the example peaks' grid, which upstream's pipeline produced
    assert np.allclose(affine, [[-2.5, 0, 0, 90], [0, 2.5, 0, -126], [0, 0, 2.5, -72], [0, 0, 0, 1]])
    assert mni_grid(UPSTREAM_TEMPLATE_AFFINE, (145, 174, 145), np.diag([1.25] * 3 + [1]))[1] == (145, 174, 145)


def test_bvecs_follow_the_dwi_into_mni():
    """A single-tensor DWI (FA 0.8, fibre along a known world direction) moved by 20 degrees: the tensor fitted in
    MNI space with the rotated b-vectors points along the rotated fibre; RAS vs LAS storage changes nothing."""
    bvecs = np.vstack([np.zeros(3), np.random.default_rng(2).normal(size=(30, 3))])
    bvecs[1:] /= np.linalg.norm(bvecs[1:], axis=1, keepdims=True)
    bvals = np.r_[0, np.full(30, 1000.0)]
    fibre = unit(1, 1, 0)
    evals = np.array([1.7e-3, 0.3e-3, 0.3e-3])
    tensor = evals[1] * np.eye(3) + (evals[0] - evals[1]) * np.outer(fibre, fibre)
    subject_affine = centred_affine((8, 8, 8), 2.5, las=False)
    world = bvecs @ _fsl_frame(subject_affine).T  # FSL b-vectors of a RAS image: voxel axes with x negated
    signal = 100 * np.exp(-bvals * np.einsum("ni,ij,nj->n", world, tensor, world))
    dwi = np.broadcast_to(signal, (8, 8, 8, 31)).astype(np.float32)
    fa = dwi_fa(dwi, bvals, bvecs.T)
    expected_fa = np.sqrt(0.5) * np.sqrt(((evals - evals.mean()) ** 2).sum() * 3) / np.sqrt((evals ** 2).sum())
    assert np.allclose(fa, expected_fa, atol=1e-3)
    s2m = rigid((0, 1, 1), 20.0, (1.0, 0, 0))
    mni_affine = centred_affine((6, 6, 6), 2.5)
    moved, new_bvecs = dwi_to_mni(dwi, subject_affine, bvecs.T, s2m, mni_affine, (6, 6, 6))
    assert new_bvecs.shape == (3, 31) and np.allclose(np.linalg.norm(new_bvecs[:, 1:], axis=0), 1)
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import TensorModel

    fit = TensorModel(gradient_table(bvals, bvecs=new_bvecs.T)).fit(moved[3, 3, 3])
    direction = _fsl_frame(mni_affine) @ fit.evecs[:, 0]
    assert abs(direction @ (s2m[:3, :3] @ fibre)) > 0.9999
    assert np.allclose(bvecs_rotation(subject_affine, np.eye(4), centred_affine((8, 8, 8), 2.5)), np.eye(3))
    upstream_like = rotate_bvecs(bvecs, 2 * s2m[:3, :3])  # (N, 3) in, (N, 3) out; columns normalised
    assert np.allclose(upstream_like, bvecs @ s2m[:3, :3].T)


def test_missing_template_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(template_module, "installed_template", lambda: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(InputError) as missing:
        find_template(None)
    message = str(missing.value)
    assert "\n" not in message and "--mni-template" in message and "download_template" in message
    with pytest.raises(InputError, match="no such file"):
        find_template(tmp_path / "nope.nii.gz")
    cached = tmp_path / "tractseg-aot" / "MNI_FA_template.nii.gz"
    cached.parent.mkdir()
    cached.write_bytes(b"not the template")
    with pytest.raises(InputError, match="sha256"):
        find_template(None)
    with pytest.raises(InputError, match="cannot read"):
        load_template(cached)


def test_installed_template_is_found_without_importing_tractseg():
    done = run_python("import sys\nfrom runtime.preprocess import find_template\n"
                      "from runtime.io.checksum import sha256_of\n"
                      "p = find_template(None)\nprint(p.name, sha256_of(p))\n"
                      "print(sorted({m.split('.')[0] for m in sys.modules} & {'tractseg', 'torch', 'jax'}))\n")
    if "no MNI FA template" in done.stderr:
        pytest.skip("TractSeg is not installed")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["MNI_FA_template.nii.gz", TEMPLATE_SHA256, "[]"]


def test_bad_inputs_are_one_line():
    with pytest.raises(InputError, match="nothing above 0"):
        register_rigid(np.zeros((8, 8, 8)), np.eye(4), synthetic_fa((16, 16, 16)), np.eye(4))
    with pytest.raises(InputError, match="reflects"):
        peaks_to_mni(np.zeros((4, 4, 4, 9)), np.eye(4), np.diag([-1.0, 1, 1, 1]), np.eye(4), (4, 4, 4))
    with pytest.raises(InputError, match=r"\(X, Y, Z, 9\)"):
        subject_fa_like(np.zeros((4, 4, 4)), np.eye(4))
    with pytest.raises(InputError, match="every first peak is zero"):
        subject_fa_like(np.zeros((4, 4, 4, 9)), np.eye(4))


def test_no_framework_is_imported():
    code = ("import sys\nimport numpy as np\n"
            "from benchmarks.preprocess import centred_affine, moved_image, rigid, synthetic_fa\n"
            "from runtime.preprocess import register_rigid, peaks_to_mni, to_subject, rigid_difference\n"
            "t = synthetic_fa((24, 28, 24)); A = centred_affine(t.shape, 4.0); m = rigid((0, 0, 1), 5.0, (2, 0, 0))\n"
            "found = register_rigid(moved_image(t, A, m, A, t.shape), A, t, A, level_iters=(100, 50))\n"
            "peaks = peaks_to_mni(np.ones((6, 6, 6, 9), np.float32), A, found, A, (6, 6, 6))\n"
            "to_subject(peaks, 'vectors', A, (6, 6, 6), found, A)\n"
            "print(rigid_difference(found, m)[0] < 2)\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'jax', 'jaxlib', 'torch', 'tractseg', "
            "'equinox', 'tensorflow'}))\n")
    done = run_python(code, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == ["True", "[]"]
