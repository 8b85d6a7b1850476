"""Letterbox frames to the model input and group them into typed, fixed-size batches."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

import cv2
import numpy as np

from gpu_analysis.engine.video import SampledFrame

PAD_VALUE = 114  # grey around the letterboxed image, as in the YOLO family of models


@dataclasses.dataclass(frozen=True)
class Letterbox:
    """How a source frame sits inside the model input: uniform scale, then centred padding.

    Coordinates are continuous pixels (a pixel's centre is at +0.5), so the mapping is exact
    in both directions: input = source * scale + pad.
    """

    source_w: int
    source_h: int
    input_w: int
    input_h: int
    scale: float
    resized_w: int
    resized_h: int
    pad_x: int
    pad_y: int

    def to_source_px(self, points_input_px: np.ndarray) -> np.ndarray:
        points = np.asarray(points_input_px, dtype=np.float64).reshape(-1, 2)
        return (points - (self.pad_x, self.pad_y)) / (
            self.resized_w / self.source_w,
            self.resized_h / self.source_h,
        )

    def to_input_px(self, points_source_px: np.ndarray) -> np.ndarray:
        points = np.asarray(points_source_px, dtype=np.float64).reshape(-1, 2)
        return points * (self.resized_w / self.source_w, self.resized_h / self.source_h) + (
            self.pad_x,
            self.pad_y,
        )


def letterbox_geometry(source_wh: tuple[int, int], input_wh: tuple[int, int]) -> Letterbox:
    source_w, source_h = source_wh
    input_w, input_h = input_wh
    scale = min(input_w / source_w, input_h / source_h)
    resized_w = min(input_w, round(source_w * scale))
    resized_h = min(input_h, round(source_h * scale))
    return Letterbox(
        source_w=source_w,
        source_h=source_h,
        input_w=input_w,
        input_h=input_h,
        scale=scale,
        resized_w=resized_w,
        resized_h=resized_h,
        pad_x=(input_w - resized_w) // 2,
        pad_y=(input_h - resized_h) // 2,
    )


def _shrink(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize with exact 2x2 averaging while the image is over twice too big, then bilinear.

    Averaging keeps small players' colours from aliasing into the grass; OpenCV's INTER_AREA
    does it in one go but takes 4x longer than this at 1080p -> 768 (20 ms against 5 ms a
    frame here), and the last step, under 2x, is where bilinear is still faithful.
    """
    while image.shape[1] >= 2 * width and image.shape[0] >= 2 * height:
        image = cv2.resize(
            image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA
        )
    if (image.shape[1], image.shape[0]) == (width, height):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def letterbox(image_bgr: np.ndarray, geometry: Letterbox) -> np.ndarray:
    """The model's view of a frame: uint8 RGB (input_h, input_w, 3), aspect kept, grey pad."""
    g = geometry
    if image_bgr.shape[:2] != (g.source_h, g.source_w):
        raise ValueError(
            f"frame is {image_bgr.shape[1]}x{image_bgr.shape[0]}, "
            f"expected {g.source_w}x{g.source_h}"
        )
    resized = _shrink(image_bgr, g.resized_w, g.resized_h)
    out = np.full((g.input_h, g.input_w, 3), PAD_VALUE, dtype=np.uint8)
    out[g.pad_y : g.pad_y + g.resized_h, g.pad_x : g.pad_x + g.resized_w] = resized[..., ::-1]
    return out


@dataclasses.dataclass(frozen=True)
class FrameBatch:
    """Letterboxed frames ready for a model, with what is needed to map results back.

    Images stay uint8 until the last moment (`model_input`): a quarter of the bytes of float32
    in shards and queues, and dividing by 255 is cheap next to the model.
    """

    images_rgb: np.ndarray  # uint8 (N, input_h, input_w, 3)
    frame_index: np.ndarray  # int64 (N,), source frame numbers
    timestamp_s: np.ndarray  # float64 (N,), seconds from the start of the video
    geometry: Letterbox

    def __len__(self) -> int:
        return int(self.frame_index.shape[0])

    def model_input(self) -> np.ndarray:
        """float32 (N, 3, H, W), RGB scaled to 0..1: the model's input tensor."""
        chw = np.ascontiguousarray(self.images_rgb.transpose(0, 3, 1, 2))
        return chw.astype(np.float32) * np.float32(1.0 / 255.0)


def make_batch(
    images_rgb: list[np.ndarray], frames: list[SampledFrame], g: Letterbox
) -> FrameBatch:
    return FrameBatch(
        images_rgb=np.stack(images_rgb),
        frame_index=np.array([f.frame_index for f in frames], dtype=np.int64),
        timestamp_s=np.array([f.timestamp_s for f in frames], dtype=np.float64),
        geometry=g,
    )


def iter_batches(
    frames: Iterable[SampledFrame], geometry: Letterbox, batch_size: int
) -> Iterator[FrameBatch]:
    """Batches of `batch_size` letterboxed frames; only the last one may be shorter."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images: list[np.ndarray] = []
    picked: list[SampledFrame] = []
    for frame in frames:
        images.append(letterbox(frame.image_bgr, geometry))
        picked.append(frame)
        if len(picked) == batch_size:
            yield make_batch(images, picked, geometry)
            images, picked = [], []
    if picked:
        yield make_batch(images, picked, geometry)
