"""The typed records that cross a process boundary, and their one JSON form.

A split match run hands values from process to process (the Dagster step to its worker, one
worker to the next through storage): step parameters, step summaries, the probed video facts.
Each is a frozen dataclass here; `to_json` and `from_json` are the only (de)serializers, so a
field added to a record travels everywhere at once. Standard library only: the profile loader
reads the defaults below before anything else is installed.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, TypeVar

# The defaults of a match analysis; the CLI, the engine steps and the profiles all read them here.
DEFAULT_SAMPLE_FPS = 5.0
DEFAULT_BATCH_SIZE = 8
DEFAULT_MODEL = "builtin"
DEFAULT_DEVICE = "auto"

Record = TypeVar("Record")


@dataclasses.dataclass(frozen=True)
class VideoFacts:
    """What probing a video found (contracts section 2, report.json `video`)."""

    path: str
    fps: float
    frame_count: int
    duration_s: float
    width: int
    height: int
    codec: str
    size_bytes: int


@dataclasses.dataclass(frozen=True)
class PreprocessParams:
    """What the preprocessing (T4) step is asked to do."""

    video_uri: str
    shards_uri: str
    sample_fps: float = DEFAULT_SAMPLE_FPS
    model: str = DEFAULT_MODEL
    batch_size: int = DEFAULT_BATCH_SIZE
    input_size: str | None = None  # "WxH" for a YOLO model with a dynamic input size
    stream: int | None = None  # the video stream (ffprobe's index); None: the default one


@dataclasses.dataclass(frozen=True)
class InferParams:
    """What the inference (A10G) step is asked to do."""

    shards_uri: str
    detections_uri: str
    calibration_uri: str | None = None
    model: str = DEFAULT_MODEL
    device: str = DEFAULT_DEVICE
    classes: str | None = None  # the YOLO classes counted as players, "player,goalkeeper"
    input_size: str | None = None  # as the preprocessing step was given


@dataclasses.dataclass(frozen=True)
class PreprocessSummary:
    """What the preprocessing step did; kept in the shards' manifest for the later steps."""

    video: VideoFacts
    sample_fps: float
    sampled_frames: int
    frames_decoded: int
    frames_lost: int
    shards: int
    shard_bytes: int
    bytes_per_frame: float
    input_size: tuple[int, int]
    decode_s: float
    preprocess_s: float
    total_s: float
    # How the run deviated from what was asked (a sample rate above the video's own).
    warnings: tuple[str, ...] = ()
    # How the video was decoded (engine.video.DecodeStats): which stream, which decoder, how
    # many frames were deinterlaced, the rotation applied, the first and last timestamps.
    decoding: dict[str, object] | None = None


@dataclasses.dataclass(frozen=True)
class InferSummary:
    """What the inference step did; stored beside the detections for aggregation."""

    detections_total: int
    sampled_frames: int
    execution_provider: str
    model: dict
    infer_s: float
    frames_per_s: float
    total_s: float


def as_plain(record: Any) -> dict[str, Any]:
    """A record as JSON-ready dicts, lists and scalars (nested records included)."""
    return json.loads(to_json(record))


def to_json(record: Any) -> str:
    if not dataclasses.is_dataclass(record) or isinstance(record, type):
        raise TypeError(f"not a record: {record!r}")
    return json.dumps(dataclasses.asdict(record), indent=2, sort_keys=True)


def from_plain(cls: type[Record], fields: dict[str, Any]) -> Record:
    """The record `cls` from the dict `as_plain` made; ValueError naming a missing field."""
    if not isinstance(fields, dict):
        raise ValueError(f"{cls.__name__}: expected an object, got {type(fields).__name__}")
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if field.name in fields:
            values[field.name] = _coerce(hints[field.name], fields[field.name])
        elif field.default is dataclasses.MISSING:
            raise ValueError(f"{cls.__name__}: missing field {field.name!r}")
    return cls(**values)


def from_json(cls: type[Record], payload: str | bytes) -> Record:
    return from_plain(cls, json.loads(payload))


def _coerce(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if dataclasses.is_dataclass(hint):
        return from_plain(hint, value)
    if typing.get_origin(hint) is tuple:
        return tuple(value)
    if hint is float:
        return float(value)
    if hint is int:
        return int(value)
    return value
