"""The `matches` dynamic partitions: one partition per match id, added by the sensor."""

from __future__ import annotations

import re

import dagster as dg

matches = dg.DynamicPartitionsDefinition(name="matches")

# A match id becomes a partition key, a file name, an S3 key part and a pod label value, so it
# is held to the characters all of them accept.
MATCH_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def is_valid_match_id(match_id: str) -> bool:
    return MATCH_ID_PATTERN.fullmatch(match_id) is not None
