"""Where a match's files live under a storage root (a local folder or s3://bucket): the one owner.

    incoming/<match_id>.mp4, incoming/<match_id>.calibration.json   what users drop
    work/<match_id>/<run>/input/, video.json, shards/, detections/, maps/
                                                  one run's own files: runs never share them
    results/<match_id>/versions/<version>/        each delivery, whole, with its manifest
    results/<match_id>/<file>, manifest.json      the current delivery (contracts section 4)

Every path is built here, and every builder refuses a match id, run id or file name that could
leave its folder (`..`, `/`, an empty name): a partition key is typed by people in the UI.
Plain Python: the sensor, the assets, the delivery, the demo and the tests build paths here.
"""

from __future__ import annotations

import dataclasses
import re

from gpu_analysis.engine import storage
from gpu_analysis.engine.errors import UserError
from gpu_analysis.engine.records import VideoFacts

VIDEO_SUFFIX = ".mp4"
CALIBRATION_SUFFIX = ".calibration.json"
VIDEO_RECORD = "video.json"
MANIFEST = "manifest.json"

# A match id becomes a partition key, a file name, an S3 key part and a pod label value, so it
# is held to the characters all of them accept.
MATCH_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# Run ids (Dagster's UUIDs) and delivery versions (timestamp-run) name folders too.
FOLDER_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,79}")
# A file name inside a match's folders: one path component, no hidden or parent entries.
FILE_NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def is_valid_match_id(match_id: str) -> bool:
    return isinstance(match_id, str) and MATCH_ID_PATTERN.fullmatch(match_id) is not None


def check_match_id(match_id: str) -> str:
    """`match_id` itself, or UserError saying what a match id may be."""
    if not is_valid_match_id(match_id):
        raise UserError(
            f"match id {match_id!r}: use 1-64 letters, digits, '_' or '-', starting with a "
            "letter or digit (a match id names folders and keys, so nothing else is accepted)"
        )
    return match_id


def _check_part(part: str, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(part, str) or pattern.fullmatch(part) is None or ".." in part:
        raise UserError(f"{what} {part!r} would leave its folder; refusing to build that path")
    return part


@dataclasses.dataclass(frozen=True)
class MatchLayout:
    root_uri: str

    def _inside(self, area: str, match_id: str, *parts: tuple[str, re.Pattern[str], str]) -> str:
        names = [check_match_id(match_id)]
        names += [_check_part(name, pattern, what) for name, pattern, what in parts]
        return storage.join(self.root_uri, area, *names)

    @property
    def incoming_uri(self) -> str:
        return storage.join(self.root_uri, "incoming")

    @property
    def results_uri(self) -> str:
        return storage.join(self.root_uri, "results")

    def video_uri(self, match_id: str) -> str:
        return storage.join(self.incoming_uri, check_match_id(match_id) + VIDEO_SUFFIX)

    def calibration_uri(self, match_id: str) -> str:
        return storage.join(self.incoming_uri, check_match_id(match_id) + CALIBRATION_SUFFIX)

    def work_uri(self, match_id: str, run_key: str, *names: str) -> str:
        """One run's own working files; `run_key` is the run's root run id (see assets)."""
        parts = [(run_key, FOLDER_ID_PATTERN, "run id")]
        parts += [(name, FILE_NAME_PATTERN, "file name") for name in names]
        return self._inside("work", match_id, *parts)

    def work_root_uri(self, match_id: str) -> str:
        return self._inside("work", match_id)

    def delivery_uri(self, match_id: str, *names: str) -> str:
        """The current delivery of a match (`results/<match_id>/<name>`)."""
        parts = [(name, FILE_NAME_PATTERN, "file name") for name in names]
        return self._inside("results", match_id, *parts)

    def version_uri(self, match_id: str, version: str, *names: str) -> str:
        """One delivered version, kept whole (`results/<match_id>/versions/<version>/`)."""
        parts = [("versions", FILE_NAME_PATTERN, "folder"), (version, FOLDER_ID_PATTERN, "version")]
        parts += [(name, FILE_NAME_PATTERN, "file name") for name in names]
        return self._inside("results", match_id, *parts)


@dataclasses.dataclass(frozen=True)
class MatchVideo:
    """What `match_video` checked, kept in the run's work folder for the later steps.

    `video_uri` and `calibration_uri` are the run's own snapshot of the incoming files;
    `incoming_version` is how the incoming files looked when they were copied (their listing
    versions), so a delivery can tell whether newer content has arrived since.
    """

    match_id: str
    video_uri: str
    calibration_uri: str
    sha256: str
    facts: VideoFacts
    incoming_version: str = ""
    calibration_sha256: str = ""
