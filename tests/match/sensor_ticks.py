"""Evaluate `match_video_sensor` the way the daemon does: one tick, then apply its requests."""

from __future__ import annotations

import dataclasses

import dagster as dg

from gpu_analysis.profile import load_profile
from video_assets.definitions import build_definitions


@dataclasses.dataclass
class SensorDriver:
    """Ticks the sensor against a real instance and keeps its cursor, as the daemon would."""

    instance: dg.DagsterInstance
    cursor: str | None = None

    def tick(self) -> list[dg.RunRequest]:
        # A fresh Definitions per tick, as each daemon tick loads the code location anew.
        defs = build_definitions(load_profile())
        repository = defs.get_repository_def()
        sensor = repository.get_sensor_def("match_video_sensor")
        with (
            dg.build_sensor_context(
                instance=self.instance,
                # With a ref, run requests are checked against the partitions the tick adds.
                instance_ref=self.instance.get_ref(),
                cursor=self.cursor,
                repository_def=repository,
                resources=defs.resources,
            ) as context,
            dg.partition_loading_context(dynamic_partitions_store=self.instance),
        ):
            data = sensor.evaluate_tick(context)
        for request in data.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(
                request.partitions_def_name, list(request.partition_keys)
            )
        self.cursor = data.cursor
        return list(data.run_requests or [])
