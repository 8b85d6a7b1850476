"""Where a match's files live under a storage root (a local folder or s3://bucket): the one owner.

    incoming/<match_id>.mp4, incoming/<match_id>.calibration.json   what users drop
    work/<match_id>/video.json, shards/, detections/, maps/           between the steps
    results/<match_id>/                                               the delivery

Plain Python: the sensor, the assets, the demo and the tests all build paths here.
"""

from __future__ import annotations

import dataclasses

from gpu_analysis.engine import storage
from gpu_analysis.engine.records import VideoFacts

VIDEO_SUFFIX = ".mp4"
CALIBRATION_SUFFIX = ".calibration.json"
VIDEO_RECORD = "video.json"


@dataclasses.dataclass(frozen=True)
class MatchLayout:
    root_uri: str

    @property
    def incoming_uri(self) -> str:
        return storage.join(self.root_uri, "incoming")

    @property
    def results_uri(self) -> str:
        return storage.join(self.root_uri, "results")

    def video_uri(self, match_id: str) -> str:
        return storage.join(self.incoming_uri, match_id + VIDEO_SUFFIX)

    def calibration_uri(self, match_id: str) -> str:
        return storage.join(self.incoming_uri, match_id + CALIBRATION_SUFFIX)

    def work_uri(self, match_id: str, *names: str) -> str:
        return storage.join(self.root_uri, "work", match_id, *names)

    def delivery_uri(self, match_id: str, *names: str) -> str:
        return storage.join(self.results_uri, match_id, *names)


@dataclasses.dataclass(frozen=True)
class MatchVideo:
    """What `match_video` checked, kept in work/<match_id>/video.json for the later steps."""

    match_id: str
    video_uri: str
    calibration_uri: str
    sha256: str
    facts: VideoFacts
