"""The `matches` dynamic partitions: one partition per match id, added by the sensor."""

from __future__ import annotations

import dagster as dg

# What a match id may be is the layout's to say: it names folders and keys.
from video_assets.layout import is_valid_match_id

matches = dg.DynamicPartitionsDefinition(name="matches")

__all__ = ["is_valid_match_id", "matches"]
