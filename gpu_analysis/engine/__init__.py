"""The analysis engine: video -> frames -> detections -> pitch positions -> temperature maps.

Plain functions and small classes, no Dagster: the `gpu-analysis` command, the Dagster assets
and the GPU workers all call `gpu_analysis.engine.steps`. tests/test_layout.py proves that
importing any module here imports no `dagster*` module and not the deployment profile.
"""
