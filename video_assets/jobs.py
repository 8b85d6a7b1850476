"""`process_match`: every match asset of one partition, video to delivery."""

from __future__ import annotations

import dagster as dg

from video_assets.assets import GROUP
from video_assets.partitions import matches

process_match = dg.define_asset_job(
    name="process_match",
    selection=dg.AssetSelection.groups(GROUP),
    partitions_def=matches,
    description="One match from its incoming video to results/<match_id>/ and its manifest.",
)
