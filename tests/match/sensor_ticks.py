"""Drive `match_video_sensor` tick by tick, keeping its cursor as the daemon would."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import dagster as dg

from gpu_analysis.profile import load_profile
from video_assets.definitions import build_definitions
from video_assets.sensors import tick_once


@dataclasses.dataclass
class HandClock:
    """A wall clock that moves only when the test says so: settle times without sleeping."""

    now_s: float = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


@dataclasses.dataclass
class SensorDriver:
    instance: dg.DagsterInstance
    cursor: str | None = None
    clock: Callable[[], float] = time.time

    def tick(self) -> list[dg.RunRequest]:
        # A fresh Definitions per tick, as each daemon tick loads the code location anew.
        requests, self.cursor = tick_once(
            build_definitions(load_profile(), clock=self.clock), self.instance, self.cursor
        )
        return requests
