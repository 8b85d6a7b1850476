"""The match assets: video -> frames -> detections -> temperature map -> delivery.

Each asset moves its large data through storage (shards, arrays, files) and returns only
metadata, so nothing large is ever pickled through an IO manager. (No `from __future__ import
annotations` here: Dagster reads the `context` annotation as a type when it defines an asset.)
"""

import base64
import contextlib
import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext

from gpu_analysis.engine import storage as stored
from gpu_analysis.engine.errors import LASTING_OS_ERRORS, UserError
from gpu_analysis.engine.records import InferParams, PreprocessParams
from gpu_analysis.profile import Profile
from video_assets.costs import NODEPOOL_TAG, gpu_step_roles, record_run_cost
from video_assets.delivery import Superseded, new_version_id, publish
from video_assets.layout import MANIFEST, VIDEO_RECORD, MatchLayout, MatchVideo, check_match_id
from video_assets.partitions import matches
from video_assets.resources import AnalysisSettings, GpuWorkers, MatchStorage, step_timeout_s
from video_assets.sensors import CALIBRATION_TAG, VIDEO_TAG

GROUP = "match_analysis"
PREVIEW_WIDTH_PX = 360  # the map shown inline in the Dagster UI; the full PNG is delivered


def _user_failure(exc: UserError) -> dg.Failure:
    # Bad input does not get better on a retry: fail the run at once with the engine's message.
    return dg.Failure(description=f"error: {exc}", allow_retries=False)


def gpu_retry_policy(execution: str) -> dg.RetryPolicy:
    """Retries of a GPU step; on the cluster the delay leaves Karpenter time for a new node."""
    delay_s = 20 if execution == "k8s" else 1
    return dg.RetryPolicy(max_retries=3, delay=delay_s, backoff=dg.Backoff.EXPONENTIAL)


# Storage steps retry throttling and brief outages (S3 503 SlowDown, a dropped connection).
STORAGE_RETRY = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL)


@dataclasses.dataclass(frozen=True)
class RunFiles:
    """Where one run of one match keeps its files: its own work folder, shared with no other
    run (a re-execution shares its root run's folder, so it finds the earlier steps' output)."""

    match_id: str
    run_key: str
    layout: MatchLayout

    @classmethod
    def of(cls, context: AssetExecutionContext, storage: MatchStorage) -> "RunFiles":
        try:
            match_id = check_match_id(context.partition_key)
        except UserError as exc:
            raise _user_failure(exc) from None
        run = context.run
        return cls(match_id, run.root_run_id or run.run_id, storage.layout)

    def work(self, *names: str) -> str:
        return self.layout.work_uri(self.match_id, self.run_key, *names)

    def record(self, storage: MatchStorage) -> MatchVideo:
        """What match_video checked in this run; a clear failure when it did not run here."""
        try:
            return storage.read_record(MatchVideo, self.work(VIDEO_RECORD))
        except UserError:
            raise dg.Failure(
                description=f"error: {self.match_id}: this run has no checked video "
                f"({self.work(VIDEO_RECORD)}); materialize the whole match (the process_match "
                "job, or match_video with everything downstream): each run keeps its own files",
                allow_retries=False,
            ) from None


def _incoming_version(storage: MatchStorage, video_uri: str, calibration_uri: str) -> str | None:
    """How the incoming files look now (their listing versions), or None if one is gone."""
    listed = {item.uri: item.version for item in storage.list(storage.layout.incoming_uri)}
    if video_uri not in listed or calibration_uri not in listed:
        return None
    return f"{listed[video_uri]}|{listed[calibration_uri]}"


def _newer_content(
    storage: MatchStorage, record: MatchVideo, sources: tuple[str, str]
) -> str | None:
    """Why this run's content is no longer the match's newest, or None if it still is.

    Newer content is a replaced video or calibration in incoming/: the sensor starts a run for
    it, and only that run may deliver. Files removed from incoming/ after the run started leave
    nothing newer, so the run still delivers. A local file whose listing changed but whose
    content did not (copied again, touched, chmod-ed) is not newer: the sensor, which versions
    local files by content, starts no run for it, so this run must still deliver.
    """
    now = _incoming_version(storage, *sources)
    if now is None or now == record.incoming_version:
        return None
    if not stored.is_s3(sources[0]) and _same_content(record, sources):
        return None
    return (
        f"superseded: {sources[0]} or its calibration changed after this run started; "
        "the run for the new content delivers"
    )


def _same_content(record: MatchVideo, sources: tuple[str, str]) -> bool:
    try:
        return (
            stored.sha256_file(Path(sources[0])) == record.sha256
            and stored.sha256_file(Path(sources[1])) == record.calibration_sha256
        )
    except OSError:  # replaced or removed while read: not the same file any more
        return False


def _sources(context: AssetExecutionContext, files: RunFiles) -> tuple[str, str]:
    tags = context.run.tags
    return (
        tags.get(VIDEO_TAG) or files.layout.video_uri(files.match_id),
        tags.get(CALIBRATION_TAG) or files.layout.calibration_uri(files.match_id),
    )


def _stop_if_superseded(
    context: AssetExecutionContext, storage: MatchStorage, files: RunFiles, record: MatchVideo
) -> None:
    # Checked before each GPU step too, so a superseded run frees its GPU slot early.
    reason = _newer_content(storage, record, _sources(context, files))
    if reason:
        storage.remove(files.work())  # a superseded run never delivers: nothing to keep
        raise dg.Failure(description=f"error: {files.match_id}: {reason}", allow_retries=False)


def _run_gpu_step(
    context: AssetExecutionContext,
    gpu_workers: GpuWorkers,
    step: str,
    params: PreprocessParams | InferParams,
    record: MatchVideo,
) -> dg.MaterializeResult:
    duration_s = record.facts.duration_s
    timeout_s = step_timeout_s(duration_s, step)
    return gpu_workers.run(context, step, params, timeout_s, video_duration_s=duration_s)


def build_assets(profile: Profile) -> list[dg.AssetsDefinition]:
    execution = profile.execution
    retry = gpu_retry_policy(execution)

    @dg.asset(group_name=GROUP, partitions_def=matches, kinds={"python", "video"})
    def match_video(
        context: AssetExecutionContext, storage: MatchStorage, settings: AnalysisSettings
    ) -> dg.MaterializeResult:
        """The incoming video: size, checksum, codec, duration, fps, resolution; its calibration.

        Both are copied into the run's own folder first: the run analyses that snapshot, so a
        file replaced in incoming/ meanwhile never mixes into it.
        """
        from gpu_analysis.engine import steps
        from gpu_analysis.engine.inference import resolve_model

        files = RunFiles.of(context, storage)
        video_source, calibration_source = _sources(context, files)
        suffix = Path(video_source).suffix.lower() or ".mp4"
        video_uri = files.work("input", "video" + suffix)
        calibration_uri = files.work("input", "calibration.json")
        # Errors name the user's files, not the run's copies of them.
        renames = {video_uri: video_source, calibration_uri: calibration_source}
        try:
            incoming_version = _incoming_version(storage, video_source, calibration_source)
            if incoming_version is None:
                raise UserError(
                    f"{video_source} and {calibration_source} must both be in incoming/"
                )
            storage.copy(video_source, video_uri)
            storage.copy(calibration_source, calibration_uri)
            with (
                storage.local_copy(video_uri) as video_path,
                storage.local_copy(calibration_uri) as calibration_path,
            ):
                renames[str(video_path)] = video_source
                renames[str(calibration_path)] = calibration_source
                facts = steps.probe(video_path)
                calibration = steps.load_calibration(calibration_path)
                # The workers run the same image: a missing model fails here, not after retries.
                resolve_model(settings.model)
                sha256 = stored.sha256_file(Path(video_path))
                calibration_sha256 = stored.sha256_file(Path(calibration_path))
        except UserError as exc:
            storage.remove(files.work())  # nothing of a refused run stays behind
            message = str(exc)
            for copy, source in renames.items():
                message = message.replace(copy, source)
            raise _user_failure(UserError(message)) from None
        facts = dataclasses.replace(facts, path=video_source)
        record = MatchVideo(
            match_id=files.match_id,
            video_uri=video_uri,
            calibration_uri=calibration_uri,
            sha256=sha256,
            facts=facts,
            incoming_version=incoming_version,
            calibration_sha256=calibration_sha256,
        )
        storage.write_json(record, files.work(VIDEO_RECORD))
        context.log.info(
            f"{facts.width}x{facts.height} {facts.codec}, {facts.duration_s:.1f} s at "
            f"{facts.fps:g} fps, sha256 {sha256[:12]}; calibration with "
            f"{len(calibration.image_points_px)} points; snapshot in {files.work('input')}"
        )
        return dg.MaterializeResult(
            metadata={
                "video_uri": video_source,
                "size_bytes": facts.size_bytes,
                "sha256": sha256,
                "codec": facts.codec,
                "duration_s": round(facts.duration_s, 3),
                "fps": round(facts.fps, 3),
                "frames": facts.frame_count,
                "resolution": f"{facts.width}x{facts.height}",
                "calibration_points": len(calibration.image_points_px),
                "pitch_m": f"{calibration.length_m:g}x{calibration.width_m:g}",
                "work_uri": files.work(),
            },
            data_version=dg.DataVersion(sha256),
        )

    @dg.asset(
        group_name=GROUP,
        partitions_def=matches,
        deps=[match_video],
        pool="gpu-t4",
        retry_policy=retry,
        kinds={"python", "video"},
        tags={NODEPOOL_TAG: profile.nodepool_gpu_preprocessing},
    )
    def match_frames(
        context: AssetExecutionContext,
        storage: MatchStorage,
        settings: AnalysisSettings,
        gpu_workers: dg.ResourceParam[GpuWorkers],
    ) -> dg.MaterializeResult:
        """Decoded, sampled, resized frames in batch shards: the T4 preprocessing step."""
        files = RunFiles.of(context, storage)
        record = files.record(storage)
        _stop_if_superseded(context, storage, files, record)
        params = PreprocessParams(
            video_uri=record.video_uri,
            shards_uri=files.work("shards"),
            sample_fps=settings.sample_fps,
            model=settings.model,
            batch_size=settings.batch_size,
            input_size=settings.input_size,
        )
        return _run_gpu_step(context, gpu_workers, "preprocess", params, record)

    @dg.asset(
        group_name=GROUP,
        partitions_def=matches,
        deps=[match_frames],
        pool="gpu-a10g",
        retry_policy=retry,
        kinds={"python", "onnx"},
        tags={NODEPOOL_TAG: profile.nodepool_gpu_inference},
    )
    def match_detections(
        context: AssetExecutionContext,
        storage: MatchStorage,
        settings: AnalysisSettings,
        gpu_workers: dg.ResourceParam[GpuWorkers],
    ) -> dg.MaterializeResult:
        """Player foot points found by the heat-map model in every shard: the A10G step."""
        files = RunFiles.of(context, storage)
        record = files.record(storage)
        _stop_if_superseded(context, storage, files, record)
        params = InferParams(
            shards_uri=files.work("shards"),
            detections_uri=files.work("detections"),
            calibration_uri=record.calibration_uri,
            model=settings.model,
            device=settings.device,
            classes=settings.classes,
            input_size=settings.input_size,
        )
        return _run_gpu_step(context, gpu_workers, "infer", params, record)

    @dg.asset(
        group_name=GROUP,
        partitions_def=matches,
        deps=[match_detections],
        retry_policy=STORAGE_RETRY,
        kinds={"python"},
    )
    def match_temperature_map(
        context: AssetExecutionContext, storage: MatchStorage, settings: AnalysisSettings
    ) -> dg.MaterializeResult:
        """Maps overall and per team, zones, the PNG and the report, staged for delivery."""
        from gpu_analysis.engine import steps

        files = RunFiles.of(context, storage)
        record = files.record(storage)
        out_dir = storage.scratch(files.match_id, files.run_key, "maps")
        try:
            with storage.local_copy(record.calibration_uri) as calibration_path:
                shutil.rmtree(out_dir, ignore_errors=True)
                report = steps.aggregate(
                    files.work("detections"),
                    calibration_path,
                    out_dir,
                    video_facts=record.facts,
                    res_m=settings.res_m,
                    progress=lambda stage, fraction: context.log.debug(f"{stage} {fraction:.0%}"),
                )
        except UserError as exc:
            raise _user_failure(exc) from None
        preview = _inline_png(out_dir / "temperature_map.png")
        # The calibration's pitch lines over the reference frame and every 5 minutes
        # (engine.camera_tracking): a wrong calibration or a lost camera shows at a glance.
        calibration_previews = {
            f"calibration_preview{path.stem.removeprefix('calibration_preview')}": (
                dg.MetadataValue.md(_inline_png(path, "calibration preview"))
            )
            for path in sorted(out_dir.glob("calibration_preview*.png"))
        }
        maps_uri = files.work("maps")
        if stored.is_s3(maps_uri):
            storage.remove(maps_uri)
            for path in sorted(out_dir.iterdir()):
                storage.put_file(path, stored.join(maps_uri, path.name))
            shutil.rmtree(out_dir)
        else:
            storage.replace(str(out_dir), maps_uri)
        context.log.info(
            f"maps of {report.get('detections_on_pitch', '?')} on-pitch detections staged "
            f"in {maps_uri}"
        )
        for warning in report.get("warnings") or []:
            context.log.warning(f"warning: {warning}")
        return dg.MaterializeResult(
            metadata={
                "temperature_map": dg.MetadataValue.md(preview),
                **calibration_previews,
                "maps_uri": maps_uri,
                **_report_metadata(report),
            }
        )

    @dg.asset(
        group_name=GROUP,
        partitions_def=matches,
        deps=[match_temperature_map],
        retry_policy=STORAGE_RETRY,
        kinds={"python"},
    )
    def match_delivery(
        context: AssetExecutionContext, storage: MatchStorage
    ) -> dg.MaterializeResult:
        """The results published to results/<match_id>/ as a new version, switched in whole.

        Only the run of the match's newest content publishes; the previous delivery stays
        current and intact until the switch, and also when anything fails before it.
        """
        files = RunFiles.of(context, storage)
        record = files.record(storage)
        sources = _sources(context, files)
        maps_uri = files.work("maps")
        staged = [o for o in storage.list(maps_uri) if "/" not in o.name]
        if not staged:
            raise dg.Failure(description=f"error: {maps_uri}: nothing staged to deliver")
        version = new_version_id(context.run.run_id)
        try:
            with contextlib.ExitStack() as copies:
                local = {o.name: copies.enter_context(storage.local_copy(o.uri)) for o in staged}
                manifest = publish(
                    files.layout,
                    files.match_id,
                    version,
                    local,
                    {"run_id": context.run.run_id, "video_sha256": record.sha256},
                    newer_content=lambda: _newer_content(storage, record, sources),
                    keep_versions=storage.versions_kept,
                    client=storage.client(),
                )
        except Superseded as exc:
            storage.remove(files.work())
            raise _user_failure(exc) from None
        except OSError as exc:
            # A full disk or a denied write fails again on a retry: a person has to act.
            if exc.errno not in LASTING_OS_ERRORS:
                raise  # anything else may pass: the retry policy decides
            where = files.layout.delivery_uri(files.match_id)
            raise dg.Failure(
                description=f"error: {files.match_id}: cannot write the delivery to {where} "
                f"({exc.strerror}); the previous delivery stays current. Make room, then "
                "re-execute this run",
                allow_retries=False,
            ) from None
        # Delivered: the run's working files (its input snapshot, shards) are no longer needed.
        storage.remove(files.work())
        delivery_uri = files.layout.delivery_uri(files.match_id)
        context.log.info(f"delivered version {version}: {len(manifest['files'])} files")
        # Last, so the run's cost counts this step too; it never fails the delivery.
        upstream = [match_video, match_frames, match_detections, match_temperature_map]
        cost = record_run_cost(context, gpu_step_roles(upstream), profile)
        return dg.MaterializeResult(
            metadata={
                "delivery_uri": delivery_uri,
                "version": version,
                "manifest_uri": files.layout.delivery_uri(files.match_id, MANIFEST),
                "files": len(manifest["files"]),
                "total_bytes": sum(f["size_bytes"] for f in manifest["files"]),
                "manifest": dg.MetadataValue.json(manifest),
                **cost,
            }
        )

    return [match_video, match_frames, match_detections, match_temperature_map, match_delivery]


def _inline_png(png: Path, alt: str = "temperature map") -> str:
    """A picture as a small inline PNG in Markdown: the Dagster UI renders it in the asset
    page."""
    import cv2

    image = cv2.imread(str(png), cv2.IMREAD_COLOR)
    if image is None:
        return f"(no preview: {png.name} unreadable)"
    height, width = image.shape[:2]
    scale = min(1.0, PREVIEW_WIDTH_PX / width)
    small = cv2.resize(
        image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA
    )
    ok, encoded = cv2.imencode(".png", small, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        return f"(no preview: {png.name} could not be encoded)"
    payload = base64.b64encode(encoded.tobytes()).decode()
    return f"![{alt}](data:image/png;base64,{payload})"


def _report_metadata(report: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of report.json, as typed metadata the UI can plot over partitions."""
    metadata: dict[str, Any] = {}
    for key in ("sampled_frames", "detections_total", "players_per_frame_mean"):
        if isinstance(report.get(key), int | float):
            metadata[key] = report[key]
    model = report.get("model") or {}
    if isinstance(model, dict) and model.get("execution_provider"):
        metadata["execution_provider"] = str(model["execution_provider"])
    timings = report.get("timings") or {}
    if isinstance(timings, dict):
        for key in ("total_s", "frames_per_s"):
            if isinstance(timings.get(key), int | float):
                metadata[key] = timings[key]
    # A map made partly of doubtful input says so where the analyst looks first.
    warnings = [str(w) for w in report.get("warnings") or []]
    metadata["warnings"] = dg.MetadataValue.md(
        "\n".join(f"- {w}" for w in warnings) if warnings else "none"
    )
    metadata["warning_count"] = len(warnings)
    teams = report.get("teams") or {}
    if isinstance(teams, dict) and "split_reliable" in teams:
        metadata["teams_reliable"] = bool(teams["split_reliable"])
    officials = report.get("officials") or {}
    if isinstance(officials.get("per_frame_mean"), int | float):
        metadata["officials_per_frame_mean"] = officials["per_frame_mean"]
    metadata["report"] = dg.MetadataValue.json(json.loads(json.dumps(report, default=str)))
    metadata["report_sha256"] = hashlib.sha256(
        json.dumps(report, sort_keys=True, default=str).encode()
    ).hexdigest()
    return metadata
