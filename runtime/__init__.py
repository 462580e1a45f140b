"""tractseg-aot runtime: upstream TractSeg's inference path on exported artifacts, with no JAX and no PyTorch."""
