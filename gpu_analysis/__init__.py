"""gpu-analysis: temperature maps from match video, and the GPU cluster that computes them."""

__version__ = "0.1.0"
