"""Drive `match_video_sensor` tick by tick, keeping its cursor as the daemon would."""

from __future__ import annotations

import dataclasses

import dagster as dg

from gpu_analysis.profile import load_profile
from video_assets.definitions import build_definitions
from video_assets.sensors import tick_once


@dataclasses.dataclass
class SensorDriver:
    instance: dg.DagsterInstance
    cursor: str | None = None

    def tick(self) -> list[dg.RunRequest]:
        # A fresh Definitions per tick, as each daemon tick loads the code location anew.
        requests, self.cursor = tick_once(
            build_definitions(load_profile()), self.instance, self.cursor
        )
        return requests
