"""`match_video_sensor`: a new match video in incoming/ becomes a partition and one run.

A match is `<match_id>.mp4` with `<match_id>.calibration.json` beside it, the suffixes in any
case (`M1.MP4`, `M1.Calibration.JSON`). A file is taken once it has looked the same for the
profile's `incoming_settle_s` (a local copy can stall half-way; S3 lists an object only once it
is whole). Its content version is then the sha256 of a local file, computed once per change of
its listing signature, or the S3 ETag, so a same-size replacement is seen and an identical copy
is not new. A local video must also be a whole MP4 (`gpu_analysis.engine.containers`); one that
is not is reported once and never submitted, unless it changes again.

The cursor (JSON) keeps what each file looked like since when, its content version and which
content was submitted, so a restarted daemon neither loses nor repeats work nor hashes a file
again; the run key (match id and content version) makes Dagster itself drop a request it has
already launched.
"""

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import dagster as dg
from dagster import SensorEvaluationContext

from gpu_analysis.engine import containers, storage
from gpu_analysis.engine.storage import StoredObject
from video_assets.layout import CALIBRATION_SUFFIX, VIDEO_SUFFIX
from video_assets.partitions import is_valid_match_id, matches
from video_assets.resources import MatchStorage

SENSOR_NAME = "match_video_sensor"
CURSOR_VERSION = 2
# The run request's tags: the files the sensor took (their names may differ in case from the
# layout's) and the content version it took them at.
MATCH_ID_TAG = "gpu-analysis/match-id"
VIDEO_TAG = "gpu-analysis/video"
CALIBRATION_TAG = "gpu-analysis/calibration"
VERSION_TAG = "gpu-analysis/version"
# Hashing and checking a local file reads it whole (sha256 at about 1.2 GB/s: seconds for a
# 3 GB match; benchmarks/incoming_checks.py). A tick starts no new check after this long, so it
# ends well inside Dagster's 60 s sensor timeout and keeps what it learnt; the rest wait a tick.
CHECK_BUDGET_S = 20.0


@dataclasses.dataclass
class FileState:
    """One incoming file as the sensor knows it."""

    signature: str  # its listing version (StoredObject.version): cheap, changes with content
    first_seen_s: float  # wall-clock time this signature was first listed
    # A local file's, once settled and read: its sha256, and why a video is not a whole MP4
    # ("" if it is). An S3 object's content version is its signature, the ETag.
    sha256: str = ""
    incomplete: str = ""


@dataclasses.dataclass
class IncomingCursor:
    # file name in incoming/ -> what it looked like since when; only files still there
    files: dict[str, FileState] = dataclasses.field(default_factory=dict)
    # match id -> content version a run was requested for, kept while its video is there
    submitted: dict[str, str] = dataclasses.field(default_factory=dict)
    # file names already reported as unusable, so the log says it once
    rejected: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def parse(cls, cursor: str | None) -> "IncomingCursor":
        if not cursor:
            return cls()
        raw = json.loads(cursor)
        if raw.get("v") == 1:
            # S3 content versions are computed as before, so their submissions carry over; a
            # local match still in incoming/ when the sensor is upgraded runs once more.
            return cls(submitted=raw["submitted"], rejected=raw["rejected"])
        if raw.get("v") != CURSOR_VERSION:
            return cls()
        files = {name: FileState(**state) for name, state in raw["files"].items()}
        return cls(files=files, submitted=raw["submitted"], rejected=raw["rejected"])

    def dump(self) -> str:
        return json.dumps(
            {
                "v": CURSOR_VERSION,
                "files": {name: _without_empty(s) for name, s in self.files.items()},
                "submitted": self.submitted,
                "rejected": self.rejected,
            },
            sort_keys=True,
            separators=(",", ":"),
        )


def _without_empty(state: FileState) -> dict[str, object]:
    # Most files are S3 objects or read and whole: no need to repeat empty fields per tick.
    return {key: value for key, value in dataclasses.asdict(state).items() if value != ""}


@dataclasses.dataclass(frozen=True)
class ReadyMatch:
    match_id: str
    content_version: str
    video: StoredObject
    calibration: StoredObject

    @property
    def run_key(self) -> str:
        return f"{self.match_id}@{self.content_version}"

    @property
    def tags(self) -> dict[str, str]:
        return {
            MATCH_ID_TAG: self.match_id,
            VIDEO_TAG: self.video.uri,
            CALIBRATION_TAG: self.calibration.uri,
            VERSION_TAG: self.content_version,
        }


@dataclasses.dataclass
class IncomingPlan:
    """What one tick decided: the matches to run, the notes for the log, the next cursor."""

    ready: list[ReadyMatch]
    waiting: list[str]  # why a match is not run yet, one line each, on every tick
    reports: list[str]  # what is wrong with a file, each said on one tick only
    cursor: IncomingCursor


def match_version(video_content_version: str, calibration_content_version: str) -> str:
    """A match's content version: its video's and calibration's together, short for run keys."""
    pair = f"{video_content_version}|{calibration_content_version}"
    return hashlib.sha256(pair.encode()).hexdigest()[:16]


def _match_id_and_suffix(name: str) -> tuple[str, str] | None:
    """(match id, VIDEO_SUFFIX or CALIBRATION_SUFFIX) of a file name, suffix in any case."""
    for suffix in (CALIBRATION_SUFFIX, VIDEO_SUFFIX):
        if len(name) > len(suffix) and name[-len(suffix) :].lower() == suffix:
            return name[: -len(suffix)], suffix
    return None


class _Planner:
    """One tick's pass over the listing; `plan_incoming` is its entry point."""

    def __init__(
        self, cursor: IncomingCursor, *, now_s: float, settle_s: float, check_budget_s: float
    ):
        self.cursor = cursor
        self.now_s = now_s
        self.settle_s = settle_s
        self.check_deadline = time.monotonic() + check_budget_s
        self.checked_any = False
        self.next_cursor = IncomingCursor()
        self.plan = IncomingPlan(ready=[], waiting=[], reports=[], cursor=self.next_cursor)

    def report_once(self, name: str, message: str) -> None:
        self.next_cursor.rejected.append(name)
        if name not in self.cursor.rejected:
            self.plan.reports.append(message)

    def track(self, item: StoredObject) -> None:
        """Carry the file's state over, or start its settle time if it is new or changed."""
        state = self.cursor.files.get(item.name)
        if state is None or state.signature != item.version:
            state = FileState(signature=item.version, first_seen_s=self.now_s)
        self.next_cursor.files[item.name] = state

    def match(self, match_id: str, videos: list[StoredObject], calibrations: list[StoredObject]):
        if match_id in self.cursor.submitted:
            self.next_cursor.submitted[match_id] = self.cursor.submitted[match_id]
        waiting = self.plan.waiting
        if len(videos) > 1 or len(calibrations) > 1:
            names = ", ".join(item.name for item in [*videos, *calibrations])
            waiting.append(f"{match_id}: {names} differ only in case; remove the extra ones")
            return
        [video] = videos
        if not calibrations:
            waiting.append(f"{match_id}: no {match_id}{CALIBRATION_SUFFIX} yet")
            return
        [calibration] = calibrations
        states = [self.next_cursor.files[item.name] for item in (video, calibration)]
        settled_s = min(self.now_s - state.first_seen_s for state in states)
        if settled_s < self.settle_s:
            waiting.append(
                f"{match_id}: new or changed {settled_s:.0f} s ago, taken once unchanged for "
                f"{self.settle_s:g} s"
            )
            return
        versions = []
        for item in (video, calibration):
            content_version = self.content_version(item, is_video=item is video)
            if content_version is None:
                waiting.append(f"{match_id}: settled, {item.name} is checked on a coming tick")
                return
            versions.append(content_version)
        if self.next_cursor.files[video.name].incomplete:
            return  # reported on the tick that found it; waits, silently, for the file to change
        version = match_version(*versions)
        if self.cursor.submitted.get(match_id) == version:
            return
        self.plan.ready.append(ReadyMatch(match_id, version, video, calibration))
        self.next_cursor.submitted[match_id] = version

    def content_version(self, item: StoredObject, *, is_video: bool) -> str | None:
        """A settled file's content version; a local file is read (hashed, a video checked
        whole) once per signature.

        None when that has to wait: this tick's checking time is spent, the file changed or
        went away while being read, or it cannot be read.
        """
        if storage.is_s3(item.uri):
            return item.version  # the ETag: S3 gives a new one whenever the content changes
        state = self.next_cursor.files[item.name]
        if state.sha256:
            return state.sha256
        if self.checked_any and time.monotonic() >= self.check_deadline:
            return None
        self.checked_any = True
        path = Path(item.uri)
        try:
            digest = storage.sha256_file(path)
            incomplete = (containers.incomplete_mp4_reason(path) or "") if is_video else ""
            signature_after = storage.local_version(path.stat())
        except FileNotFoundError:
            del self.next_cursor.files[item.name]
            return None
        except OSError as exc:
            self.report_once(item.name, f"cannot read {item.uri}: {exc}; make it readable")
            return None
        if signature_after != state.signature:  # written to while read: let it settle again
            self.next_cursor.files[item.name] = FileState(signature_after, self.now_s)
            return None
        state.sha256, state.incomplete = digest, incomplete
        if incomplete:
            self.plan.reports.append(
                f"not processing {item.uri}: not a whole MP4 ({incomplete}); a copy that stopped "
                "half-way? Copy the whole file again: it is taken once it is complete"
            )
        return digest


def plan_incoming(
    listing: Sequence[StoredObject],
    cursor: IncomingCursor,
    *,
    now_s: float,
    settle_s: float,
    check_budget_s: float,
) -> IncomingPlan:
    """Decide which incoming matches are complete, settled and new.

    `now_s`: wall-clock time of the tick; a file counts once its listing signature has stayed
    the same for `settle_s`. Settled local files are hashed and checked here; no new one is
    started once `check_budget_s` seconds have gone on it this tick (the first always is).
    """
    planner = _Planner(cursor, now_s=now_s, settle_s=settle_s, check_budget_s=check_budget_s)
    videos: dict[str, list[StoredObject]] = {}
    calibrations: dict[str, list[StoredObject]] = {}
    for item in listing:
        if any(part.startswith(".") for part in item.name.split("/")):
            continue  # hidden: a copy tool's temporary file (rsync), a desktop's index
        split = _match_id_and_suffix(item.name)
        if split is None:
            planner.report_once(
                item.name,
                f"skipping {item.name}: incoming/ takes <match_id>{VIDEO_SUFFIX} with "
                f"<match_id>{CALIBRATION_SUFFIX} beside it",
            )
            continue
        match_id, suffix = split
        if not is_valid_match_id(match_id):
            if suffix == VIDEO_SUFFIX:
                planner.report_once(
                    item.name,
                    f"skipping {item.name}: a match id is 1-64 letters, digits, '_' or '-', "
                    "starting with a letter or digit",
                )
            continue
        planner.track(item)
        found = videos if suffix == VIDEO_SUFFIX else calibrations
        found.setdefault(match_id, []).append(item)
    for match_id in sorted(videos):
        planner.match(match_id, videos[match_id], calibrations.get(match_id, []))
    return planner.plan


def build_match_video_sensor(
    job_name: str,
    *,
    settle_s: float,
    interval_s: int,
    clock: Callable[[], float] = time.time,
) -> dg.SensorDefinition:
    """The sensor; `clock` (wall-clock seconds) is what it measures settle times with."""

    @dg.sensor(
        name=SENSOR_NAME,
        job_name=job_name,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="A new <match_id>.mp4 with its calibration in incoming/ starts process_match.",
    )
    def match_video_sensor(
        context: SensorEvaluationContext, storage: MatchStorage
    ) -> dg.SensorResult:
        plan = plan_incoming(
            storage.list_incoming(),
            IncomingCursor.parse(context.cursor),
            now_s=clock(),
            settle_s=settle_s,
            check_budget_s=CHECK_BUDGET_S,
        )
        for message in plan.reports:
            context.log.warning(message)
        for note in plan.waiting:
            context.log.info(note)
        known = set(context.instance.get_dynamic_partitions(matches.name))
        new_ids = sorted({m.match_id for m in plan.ready} - known)
        run_requests = [
            dg.RunRequest(run_key=m.run_key, partition_key=m.match_id, tags=m.tags)
            for m in plan.ready
        ]
        return dg.SensorResult(
            run_requests=run_requests,
            dynamic_partitions_requests=[matches.build_add_request(new_ids)] if new_ids else [],
            cursor=plan.cursor.dump(),
            skip_reason=None if run_requests else _skip_reason(plan),
        )

    return match_video_sensor


def _skip_reason(plan: IncomingPlan) -> str:
    if not plan.waiting:
        return "no new complete match video"
    shown = "; ".join(plan.waiting[:3])
    more = f" (and {len(plan.waiting) - 3} more)" if len(plan.waiting) > 3 else ""
    return f"waiting: {shown}{more}"


def tick_once(
    defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None
) -> tuple[list[dg.RunRequest], str | None]:
    """One evaluation of the sensor as the daemon does it: its partitions added, its cursor back.

    For `make demo` and the tests, which drive the sensor without a daemon. Its log goes to
    stderr, as a daemon's does.
    """
    repository = defs.get_repository_def()
    sensor = repository.get_sensor_def(SENSOR_NAME)
    with (
        dg.build_sensor_context(
            instance=instance,
            # With a ref, run requests are checked against the partitions the tick adds.
            instance_ref=instance.get_ref(),
            cursor=cursor,
            repository_def=repository,
            resources=defs.resources,
        ) as context,
        dg.partition_loading_context(dynamic_partitions_store=instance),
    ):
        data = sensor.evaluate_tick(context)
    for request in data.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return list(data.run_requests or []), data.cursor
