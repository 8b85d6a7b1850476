"""A detector that returns a synthetic clip's ground-truth feet: exact detections for tests."""

from __future__ import annotations

import numpy as np

from gpu_analysis.engine.batching import FrameBatch
from gpu_analysis.engine.inference import FrameFeet


class TruthDetector:
    """Behind the Detector interface, answers with the true foot points of visible players."""

    name = "ground-truth"
    kind = "truth"
    execution_provider = "none"

    def __init__(self, truth, input_wh: tuple[int, int] = (640, 384)):
        self.truth = truth
        self.input_wh = input_wh

    def detect(self, batch: FrameBatch) -> list[FrameFeet]:
        out = []
        for frame in batch.frame_index:
            seen = self.truth.visible[frame]
            feet = self.truth.foot_points_px[frame][seen].astype(np.float64)
            out.append(FrameFeet(feet, np.ones(len(feet), np.float32), np.full(len(feet), np.nan)))
        return out
