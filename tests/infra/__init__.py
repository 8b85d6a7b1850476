"""Tests of the cluster area: units against a moto server over HTTP, the Dagster jobs."""
