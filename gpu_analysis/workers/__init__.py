"""Worker processes for the two GPU steps, launched through Dagster Pipes (process or pod)."""
