"""From fused probabilities to files: the result object, upstream's post-processing, the writers and the
all-or-nothing output folder."""
