"""Model-side maths for `curate`: ScaleBiO and the helpers every method shares.

This package never imports `curate`; it takes and returns plain data (torch modules, tensors, batch samplers,
``dict[str, float]`` weights) so it can be used from any training script.
"""
