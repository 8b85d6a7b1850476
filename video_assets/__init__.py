"""Per-match video analysis as Dagster assets: video -> frames -> detections -> maps -> delivery."""
