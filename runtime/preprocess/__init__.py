"""``--preprocess`` without FSL: upstream TractSeg's ``move_to_MNI_space`` / ``move_to_subject_space``
(``libs/preprocessing.py``) as a library. The subject's FA (or, for peaks input, its first-peak length) is
registered rigidly (6 DOF, mutual information, DIPY's ``dipy.align``) to upstream's MNI FA template, the run
happens on the template's field of view at the subject's spacing, and every output goes back to the input's grid
and affine. Needs dipy (the ``diffusion`` extra); never imports tractseg, torch or jax.

The API (arrays in, arrays out; transforms are 4x4 world mm -> world mm)::

    find_template(path=None) -> Path                  # --mni-template, installed TractSeg, verified cache
    load_template(path) -> (data, affine)
    subject_fa_like(peaks_data, affine) -> fa_like    # first-peak length in [0, 1]
    dwi_fa(dwi, bvals, bvecs, mask=None) -> fa         # raw DWI: dipy tensor FA
    register_rigid(moving, moving_affine, template, template_affine) -> subject_to_mni
    mni_grid(template_affine, template_shape, subject_affine) -> (mni_affine, mni_shape)
    peaks_to_mni(data, affine, subject_to_mni, mni_affine, mni_shape) -> peaks on the MNI grid
    to_mni(volume, kind, subject_affine, subject_to_mni, mni_affine, mni_shape)    # a brain mask: kind "mask"
    dwi_to_mni(dwi, subject_affine, bvecs, subject_to_mni, mni_affine, mni_shape) -> (dwi, bvecs)
    to_subject(volume_in_mni, kind, subject_affine, subject_shape, subject_to_mni, mni_affine)
    rotate_bvecs(bvecs, rotation); bvecs_rotation(subject_affine, subject_to_mni, mni_affine) -> 3x3

A run on peaks: ``template = load_template(find_template(opt))``; ``s2m = register_rigid(subject_fa_like(peaks,
A), A, *template)``; ``mni_A, mni_shape = mni_grid(template[1], template[0].shape, A)``; the pipeline runs on
``peaks_to_mni(peaks, A, s2m, mni_A, mni_shape)`` with affine ``mni_A``; each output goes back with
``to_subject(out, kind, A, peaks.shape, s2m, mni_A)``: "mask" for masks, "linear" for probabilities and density
maps, "vectors" for TOMs. Errors are one line (:class:`~runtime.errors.InputError`; a missing dipy:
:class:`~runtime.errors.MissingExtraError`).
"""
from runtime.preprocess.bvecs import bvecs_rotation, rotate_bvecs
from runtime.preprocess.fa import as_moving, dwi_fa, subject_fa_like
from runtime.preprocess.grids import grid_at_spacing, rotation_of
from runtime.preprocess.register import register_rigid, rigid_difference
from runtime.preprocess.template import (TEMPLATE_SHA256, download_template, find_template, load_template,
                                         template_cache_path)
from runtime.preprocess.to_mni import dwi_to_mni, mni_grid, peaks_to_mni, to_mni
from runtime.preprocess.to_subject import KINDS, to_subject

__all__ = ["KINDS", "TEMPLATE_SHA256", "as_moving", "bvecs_rotation", "download_template", "dwi_fa", "dwi_to_mni",
           "find_template", "grid_at_spacing", "load_template", "mni_grid", "peaks_to_mni", "register_rigid",
           "rigid_difference", "rotate_bvecs", "rotation_of", "subject_fa_like", "template_cache_path", "to_mni",
           "to_subject"]
