"""Upstream's weights into a bundle without the export toolchain: ``python -m runtime.weights`` (console script
``tractseg-aot-download``).

- :mod:`~runtime.weights.download`: upstream's files from Zenodo (resumable, size checked, sha256 recorded).
- :mod:`~runtime.weights.checkpoint`: torch.save files (zip or legacy) read without torch; only tensors and
  plain containers are unpickled.
- :mod:`~runtime.weights.onnx_graph`: the exported ONNX and its weight-free graph at protobuf's wire level.
- :mod:`~runtime.weights.shipped`: the weight-free graphs shipped in ``graphs/`` (made by
  ``python -m export.weight_free``) and how a state_dict fills one.
- :mod:`~runtime.weights.reference`: the network in numpy float64, the reference of the checks and self-check.
- :mod:`~runtime.weights.build`: the bundle: filled ONNX, checks, ``selfcheck.npz``, manifest.
"""
