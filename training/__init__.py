"""Training the built-in foot-point heat-map model (needs the `train` extra: torch, onnx)."""
