"""Synthetic match footage with ground truth, for tests, demos, benchmarks and model training."""

from gpu_analysis.synthetic.camera import (
    CAMERA_PRESETS,
    Camera,
    LensDistortion,
    preset_camera,
    random_side_camera,
)
from gpu_analysis.synthetic.camera_motion import SHOT_CLOSEUP, SHOT_PITCH, CameraMotion, Cut
from gpu_analysis.synthetic.clip import (
    ClipTruth,
    H264Writer,
    MatchRenderer,
    calibration_path_for,
    ffmpeg_exe,
    generate_match_clip,
)
from gpu_analysis.synthetic.look import Look, default_look, random_look

__all__ = [
    "CAMERA_PRESETS",
    "SHOT_CLOSEUP",
    "SHOT_PITCH",
    "Camera",
    "CameraMotion",
    "ClipTruth",
    "Cut",
    "H264Writer",
    "LensDistortion",
    "Look",
    "MatchRenderer",
    "calibration_path_for",
    "default_look",
    "ffmpeg_exe",
    "generate_match_clip",
    "preset_camera",
    "random_look",
    "random_side_camera",
]
