"""The network stage: backends (ONNX Runtime, OpenVINO, TensorFlow, IREE), the slice loop and its fused
accumulator, precisions and the host self-check."""
