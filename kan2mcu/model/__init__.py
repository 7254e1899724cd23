"""The model: the IR, the float B-spline forward, the torch module, checkpoints and importers."""
