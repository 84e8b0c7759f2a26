"""Plain nn.Modules: no Lightning or Hydra here, so models can be reused anywhere.

Every model takes `input_shape` (C, H, W) or (features,) and, where it predicts, `num_outputs`;
the builder fills both in from the data module.
"""
