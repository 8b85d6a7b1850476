"""`process_match`: every match asset of one partition (a match id), video to delivery."""

from __future__ import annotations

import dagster as dg

from video_assets.assets import GROUP

process_match = dg.define_asset_job(
    name="process_match",
    selection=dg.AssetSelection.groups(GROUP),
    description="One match from its incoming video to results/<match_id>/ and its manifest.",
)
