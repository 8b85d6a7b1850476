"""Running Dagster on the cluster: chart values, instance config, bootstrap."""
