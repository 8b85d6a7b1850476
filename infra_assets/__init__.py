"""The GPU cluster of seed 000 as Dagster assets: spec -> observe -> plan -> apply."""
