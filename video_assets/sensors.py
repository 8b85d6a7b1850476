"""`match_video_sensor`: a new match video in incoming/ becomes a partition and one run.

A video is `<match_id>.mp4` with `<match_id>.calibration.json` beside it. The cursor (JSON)
remembers what each match looked like on the last tick and which content was already
submitted, so a restarted daemon neither loses nor repeats work; the run key (match id and
content version) makes Dagster itself drop a request it has already launched.
"""

import dataclasses
import hashlib
import json

import dagster as dg
from dagster import SensorEvaluationContext

from gpu_analysis.engine.storage import StoredObject
from video_assets.layout import CALIBRATION_SUFFIX, VIDEO_SUFFIX
from video_assets.partitions import is_valid_match_id, matches
from video_assets.resources import MatchStorage

SENSOR_NAME = "match_video_sensor"
CURSOR_VERSION = 1


@dataclasses.dataclass
class IncomingCursor:
    # match id -> content version seen on the last tick (a local file still being written
    # changes between ticks)
    seen: dict[str, str] = dataclasses.field(default_factory=dict)
    # match id -> content version a run was requested for
    submitted: dict[str, str] = dataclasses.field(default_factory=dict)
    # file names already reported as unusable, so the log says it once
    rejected: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def parse(cls, cursor: str | None) -> "IncomingCursor":
        if not cursor:
            return cls()
        raw = json.loads(cursor)
        if raw.get("v") != CURSOR_VERSION:
            return cls()
        return cls(seen=raw["seen"], submitted=raw["submitted"], rejected=raw["rejected"])

    def dump(self) -> str:
        return json.dumps(
            {
                "v": CURSOR_VERSION,
                "seen": self.seen,
                "submitted": self.submitted,
                "rejected": self.rejected,
            },
            sort_keys=True,
            separators=(",", ":"),
        )


@dataclasses.dataclass(frozen=True)
class ReadyMatch:
    match_id: str
    content_version: str
    video: StoredObject

    @property
    def run_key(self) -> str:
        return f"{self.match_id}@{self.content_version}"


@dataclasses.dataclass
class IncomingPlan:
    """What one tick decided: the matches to run, the notes for the log, the next cursor."""

    ready: list[ReadyMatch]
    waiting: list[str]
    rejected: list[str]
    cursor: IncomingCursor


def plan_incoming(
    listing: list[StoredObject], cursor: IncomingCursor, *, require_stable: bool
) -> IncomingPlan:
    """Decide which incoming videos are complete and new.

    `require_stable`: a local file counts as complete only once it looks the same on two
    ticks in a row. On S3 an object is listed only once its upload has completed.
    """
    by_name = {item.name: item for item in listing}
    next_cursor = IncomingCursor()
    ready: list[ReadyMatch] = []
    waiting: list[str] = []
    rejected: list[str] = []
    for name, video in by_name.items():
        if not name.endswith(VIDEO_SUFFIX):
            continue
        match_id = name[: -len(VIDEO_SUFFIX)]
        if not is_valid_match_id(match_id):
            next_cursor.rejected.append(name)
            if name not in cursor.rejected:
                rejected.append(name)
            continue
        if match_id in cursor.submitted:  # kept while the match's files are in incoming/
            next_cursor.submitted[match_id] = cursor.submitted[match_id]
        calibration = by_name.get(match_id + CALIBRATION_SUFFIX)
        if calibration is None:
            waiting.append(f"{match_id}: no {match_id}{CALIBRATION_SUFFIX} yet")
            continue
        version = hashlib.sha256(f"{video.version}|{calibration.version}".encode()).hexdigest()[:16]
        next_cursor.seen[match_id] = version
        if cursor.submitted.get(match_id) == version:
            continue
        if require_stable and cursor.seen.get(match_id) != version:
            waiting.append(f"{match_id}: new or changed since the last tick, letting it settle")
            continue
        ready.append(ReadyMatch(match_id, version, video))
        next_cursor.submitted[match_id] = version
    return IncomingPlan(ready=ready, waiting=waiting, rejected=rejected, cursor=next_cursor)


def build_match_video_sensor(
    job_name: str, *, require_stable: bool, interval_s: int
) -> dg.SensorDefinition:
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
            require_stable=require_stable,
        )
        for name in plan.rejected:
            context.log.warning(
                f"skipping {name}: a match id is 1-64 letters, digits, '_' or '-', "
                "starting with a letter or digit"
            )
        for note in plan.waiting:
            context.log.info(note)
        known = set(context.instance.get_dynamic_partitions(matches.name))
        new_ids = sorted({m.match_id for m in plan.ready} - known)
        run_requests = [
            dg.RunRequest(
                run_key=m.run_key,
                partition_key=m.match_id,
                tags={"gpu-analysis/match-id": m.match_id, "gpu-analysis/video": m.video.uri},
            )
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

    For `make demo` and the tests, which drive the sensor without a daemon.
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
