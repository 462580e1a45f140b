"""Upstream TractSeg's helper commands, the ones users call beside ``TractSeg``, as one command line:
``tractseg-aot-tools <command>`` (``python -m runtime.tools <command>``), one small module per command.

Mirrors (TractSeg 2.10, the scripts in its ``bin/``):

| command (module) | upstream (``bin/``) | equal to upstream |
|---|---|---|
| ``calc_FA`` (:mod:`~runtime.tools.calc_fa`) | ``calc_FA`` (dipy ``TensorModel``, WLS) | FA within 1e-5 |
| ``flip_peaks`` (:mod:`~runtime.tools.flip_peaks`) | ``flip_peaks`` | the file, byte for byte |
| ``rotate_bvecs`` (:mod:`~runtime.tools.rotate_bvecs`) | ``rotate_bvecs`` | the text, byte for byte |
| ``remove_negative_values`` (:mod:`~runtime.tools.remove_negative_values`) | ``remove_negative_values`` | the file |
| ``get_image_spacing`` (:mod:`~runtime.tools.image_spacing`) | ``get_image_spacing`` | the printed line |

Beyond upstream: each bad input is refused in one line naming the file (exit 1) before anything is written, and
each output is written atomically (a temporary name beside it, then a rename), so a failed run leaves nothing and
``-o`` may name the input. Each module holds the command's function (usable from Python) and its flags
(``add_arguments``); :mod:`runtime.tools.__main__` dispatches. Only ``calc_FA`` needs dipy (the ``diffusion``
extra); none needs jax, torch, FSL or MRtrix.
"""
