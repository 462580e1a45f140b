"""tractseg-aot runtime: TractSeg inference with no JAX and no PyTorch (see runtime.pipeline)."""
from runtime.pipeline import TractSegPipeline
from runtime.outputs.segmentation import Segmentation

__all__ = ["TractSegPipeline", "Segmentation"]
