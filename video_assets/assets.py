"""The match assets: video -> frames -> detections -> temperature map -> delivery.

Each asset moves its large data through storage (shards, arrays, files) and returns only
metadata, so nothing large is ever pickled through an IO manager.
"""

import base64
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext

from gpu_analysis.engine import storage as stored
from gpu_analysis.engine.errors import UserError
from gpu_analysis.engine.records import InferParams, PreprocessParams
from gpu_analysis.profile import Profile
from video_assets.layout import VIDEO_RECORD, MatchVideo
from video_assets.partitions import matches
from video_assets.resources import AnalysisSettings, GpuWorkers, MatchStorage

GROUP = "match_analysis"
MANIFEST = "manifest.json"
PREVIEW_WIDTH_PX = 360  # the map shown inline in the Dagster UI; the full PNG is delivered


def _user_failure(exc: UserError) -> dg.Failure:
    # Bad input does not get better on a retry: fail the run at once with the engine's message.
    return dg.Failure(description=f"error: {exc}", allow_retries=False)


def gpu_retry_policy(execution: str) -> dg.RetryPolicy:
    """Retries of a GPU step; on the cluster the delay leaves Karpenter time for a new node."""
    delay_s = 20 if execution == "k8s" else 1
    return dg.RetryPolicy(max_retries=3, delay=delay_s, backoff=dg.Backoff.EXPONENTIAL)


def build_assets(profile: Profile) -> list[dg.AssetsDefinition]:
    execution = profile.execution
    retry = gpu_retry_policy(execution)

    @dg.asset(group_name=GROUP, partitions_def=matches, kinds={"python", "video"})
    def match_video(
        context: AssetExecutionContext, storage: MatchStorage, settings: AnalysisSettings
    ) -> dg.MaterializeResult:
        """The incoming video: size, checksum, codec, duration, fps, resolution; its calibration."""
        from gpu_analysis.engine import steps
        from gpu_analysis.engine.inference import resolve_model

        match_id = context.partition_key
        layout = storage.layout
        video_uri = layout.video_uri(match_id)
        calibration_uri = layout.calibration_uri(match_id)
        # The workers read the video from S3 themselves: the local copy goes when checked.
        try:
            with (
                storage.local_copy(video_uri) as video_path,
                storage.local_copy(calibration_uri) as calibration_path,
            ):
                facts = steps.probe(video_path)
                calibration = steps.load_calibration(calibration_path)
                # The workers run the same image: a missing model fails here, not after retries.
                resolve_model(settings.model)
                sha256 = stored.sha256_file(Path(video_path))
        except UserError as exc:
            raise _user_failure(exc) from None
        record = MatchVideo(match_id, video_uri, calibration_uri, sha256, facts)
        storage.write_json(record, layout.work_uri(match_id, VIDEO_RECORD))
        context.log.info(
            f"{facts.width}x{facts.height} {facts.codec}, {facts.duration_s:.1f} s at "
            f"{facts.fps:g} fps, sha256 {sha256[:12]}; calibration with "
            f"{len(calibration.image_points_px)} points"
        )
        return dg.MaterializeResult(
            metadata={
                "video_uri": video_uri,
                "size_bytes": facts.size_bytes,
                "sha256": sha256,
                "codec": facts.codec,
                "duration_s": round(facts.duration_s, 3),
                "fps": round(facts.fps, 3),
                "frames": facts.frame_count,
                "resolution": f"{facts.width}x{facts.height}",
                "calibration_points": len(calibration.image_points_px),
                "pitch_m": f"{calibration.length_m:g}x{calibration.width_m:g}",
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
        tags={"gpu-analysis/nodepool": profile.nodepool_gpu_preprocessing},
    )
    def match_frames(
        context: AssetExecutionContext,
        storage: MatchStorage,
        settings: AnalysisSettings,
        gpu_workers: dg.ResourceParam[GpuWorkers],
    ) -> dg.MaterializeResult:
        """Decoded, sampled, resized frames in batch shards: the T4 preprocessing step."""
        match_id = context.partition_key
        params = PreprocessParams(
            video_uri=storage.layout.video_uri(match_id),
            shards_uri=storage.layout.work_uri(match_id, "shards"),
            sample_fps=settings.sample_fps,
            model=settings.model,
            batch_size=settings.batch_size,
        )
        return gpu_workers.run(context, "preprocess", params)

    @dg.asset(
        group_name=GROUP,
        partitions_def=matches,
        deps=[match_frames],
        pool="gpu-a10g",
        retry_policy=retry,
        kinds={"python", "onnx"},
        tags={"gpu-analysis/nodepool": profile.nodepool_gpu_inference},
    )
    def match_detections(
        context: AssetExecutionContext,
        storage: MatchStorage,
        settings: AnalysisSettings,
        gpu_workers: dg.ResourceParam[GpuWorkers],
    ) -> dg.MaterializeResult:
        """Player foot points found by the heat-map model in every shard: the A10G step."""
        match_id = context.partition_key
        params = InferParams(
            shards_uri=storage.layout.work_uri(match_id, "shards"),
            detections_uri=storage.layout.work_uri(match_id, "detections"),
            calibration_uri=storage.layout.calibration_uri(match_id),
            model=settings.model,
            device=settings.device,
        )
        return gpu_workers.run(context, "infer", params)

    @dg.asset(group_name=GROUP, partitions_def=matches, deps=[match_detections], kinds={"python"})
    def match_temperature_map(
        context: AssetExecutionContext, storage: MatchStorage, settings: AnalysisSettings
    ) -> dg.MaterializeResult:
        """Maps overall and per team, zones, the PNG and the report, staged for delivery."""
        from gpu_analysis.engine import steps

        match_id = context.partition_key
        layout = storage.layout
        record = storage.read_record(MatchVideo, layout.work_uri(match_id, VIDEO_RECORD))
        out_dir = storage.scratch(match_id, "maps")
        try:
            with storage.local_copy(record.calibration_uri) as calibration_path:
                shutil.rmtree(out_dir, ignore_errors=True)
                report = steps.aggregate(
                    layout.work_uri(match_id, "detections"),
                    calibration_path,
                    out_dir,
                    video_facts=record.facts,
                    res_m=settings.res_m,
                    progress=lambda stage, fraction: context.log.debug(f"{stage} {fraction:.0%}"),
                )
        except UserError as exc:
            raise _user_failure(exc) from None
        preview = _inline_png(out_dir / "temperature_map.png")
        maps_uri = layout.work_uri(match_id, "maps")
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
        return dg.MaterializeResult(
            metadata={
                "temperature_map": dg.MetadataValue.md(preview),
                "maps_uri": maps_uri,
                **_report_metadata(report),
            }
        )

    @dg.asset(
        group_name=GROUP, partitions_def=matches, deps=[match_temperature_map], kinds={"python"}
    )
    def match_delivery(
        context: AssetExecutionContext, storage: MatchStorage
    ) -> dg.MaterializeResult:
        """The results published to results/<match_id>/, with the manifest written last."""
        match_id = context.partition_key
        layout = storage.layout
        maps_uri = layout.work_uri(match_id, "maps")
        target_uri = layout.delivery_uri(match_id)
        staged = [o for o in storage.list(maps_uri) if "/" not in o.name]
        if not staged:
            raise dg.Failure(description=f"error: {maps_uri}: nothing staged to deliver")
        # Take the old manifest down first: while files change, readers see "not ready".
        manifest_uri = layout.delivery_uri(match_id, MANIFEST)
        storage.remove_file(manifest_uri)
        staged_names = {item.name for item in staged}
        for old in storage.list(target_uri):
            if old.name not in staged_names:
                storage.remove_file(old.uri)
        files = []
        for item in staged:
            with storage.local_copy(item.uri) as local:
                storage.put_file(local, stored.join(target_uri, item.name))
                sha256 = stored.sha256_file(local)
            files.append({"name": item.name, "size_bytes": item.size_bytes, "sha256": sha256})
        record = storage.read_record(MatchVideo, layout.work_uri(match_id, VIDEO_RECORD))
        manifest = {
            "match_id": match_id,
            "run_id": context.run.run_id,
            "video_sha256": record.sha256,
            "files": files,
        }
        storage.write_json(manifest, manifest_uri)
        context.log.info(f"delivered {len(files)} files to {target_uri}")
        return dg.MaterializeResult(
            metadata={
                "delivery_uri": target_uri,
                "manifest_uri": manifest_uri,
                "files": len(files),
                "total_bytes": sum(f["size_bytes"] for f in files),
                "manifest": dg.MetadataValue.json(manifest),
            }
        )

    return [match_video, match_frames, match_detections, match_temperature_map, match_delivery]


def _inline_png(png: Path) -> str:
    """The map as a small inline PNG in Markdown: the Dagster UI renders it in the asset page."""
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
    return f"![temperature map](data:image/png;base64,{payload})"


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
    metadata["report"] = dg.MetadataValue.json(json.loads(json.dumps(report, default=str)))
    metadata["report_sha256"] = hashlib.sha256(
        json.dumps(report, sort_keys=True, default=str).encode()
    ).hexdigest()
    return metadata
