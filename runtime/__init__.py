"""tractseg-aot runtime: TractSeg inference with no JAX and no PyTorch (see runtime.pipeline)."""
from runtime.options import BackendOptions, QCOptions, RawInputOptions, RunOptions, SaveOptions
from runtime.outputs.segmentation import Segmentation
from runtime.pipeline import TractSegPipeline

__all__ = ["BackendOptions", "QCOptions", "RawInputOptions", "RunOptions", "SaveOptions", "Segmentation",
           "TractSegPipeline"]
