"""Tract orientation maps (``--output_type TOM``): upstream's four peak-regression part models run on the coronal
slices one part at a time, then masked with each bundle's segmentation and normalised to unit length."""
from runtime.tom.masks import check_masks, default_masks_dir
from runtime.tom.result import TOMResult

__all__ = ["TOMResult", "check_masks", "default_masks_dir"]
