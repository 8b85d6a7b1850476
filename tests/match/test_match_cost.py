"""Cost per match: pricing by hand, a real run's delivery metadata, the daily sum, the schedule."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest
from dagster import DagsterEventType

from gpu_analysis.synthetic import generate_match_clip
from infra_assets.cost import instance_hourly_usd
from tests.match.test_process_match import Pipeline, materialization
from video_assets.costs import match_costs_daily, nightly_match_costs
from video_assets.match_cost import pool_price, price_steps

GPU_STEPS = {"match_frames", "match_detections"}


def test_pool_prices_are_the_seed_pools_at_hand_computed_prices():
    # By hand from infra_assets/cost.py: us-east-1 list x 0.224 / 0.192 (m6i.xlarge, eu-west-3
    # over us-east-1), rounded to 4 places; spot at 35 % (g4dn) and 40 % (c6a) of on-demand.
    # g4dn.xlarge 0.526 -> 0.6137; 70 % spot: 0.7 x 0.214795 + 0.3 x 0.6137 = 0.3344665.
    preprocessing = pool_price("gpu-preprocessing")
    assert (preprocessing.instance_type, preprocessing.gpu) == ("g4dn.xlarge", "T4")
    assert preprocessing.spot_share == pytest.approx(0.70)
    assert preprocessing.hourly_usd == pytest.approx(0.3344665, abs=1e-9)
    # g5.xlarge 1.006 -> 1.1737, on-demand only (the inference SLA).
    inference = pool_price("gpu-inference")
    assert (inference.instance_type, inference.gpu, inference.spot_share) == (
        "g5.xlarge",
        "A10G",
        0,
    )
    assert inference.hourly_usd == pytest.approx(1.1737, abs=1e-9)
    # c6a.xlarge 0.153 -> 0.1785, 80 % spot at 0.0714: 0.09282 a node, a quarter for 1 vCPU.
    coordination = pool_price("cpu-coordination", vcpus=1.0)
    assert (coordination.instance_type, coordination.gpu) == ("c6a.xlarge", None)
    assert coordination.spot_share == pytest.approx(0.80)
    assert coordination.hourly_usd == pytest.approx(0.023205, abs=1e-9)

    prices = {p.role: p for p in (preprocessing, inference, coordination)}
    roles = {
        "match_frames": "gpu-preprocessing",
        "match_detections": "gpu-inference",
        "match_delivery": "cpu-coordination",
    }
    cost = price_steps(
        {"match_frames": 100, "match_detections": 200, "match_delivery": 30}, roles, prices
    )
    assert (cost.gpu_s, cost.cpu_s) == (300, 30)
    # 100/3600 x 0.3344665 + 200/3600 x 1.1737 + 30/3600 x 0.023205
    assert cost.cost_usd == pytest.approx(0.0746896667, abs=1e-9)
    assert "| match_frames | gpu-preprocessing | g4dn.xlarge | 70% |" in cost.as_markdown()


def test_unpriced_pools_and_instances_say_what_to_add():
    with pytest.raises(KeyError, match=r"no node pool serves role 'gpu-h100'.*nodepool_"):
        pool_price("gpu-h100")
    with pytest.raises(KeyError, match=r"POOL_INSTANCE_HOURLY_US_EAST_1 in infra_assets/cost\.py"):
        instance_hourly_usd("p5.48xlarge")


@pytest.fixture(scope="module")
def cost_pipeline(tmp_path_factory, heatmap_model):
    clip = tmp_path_factory.mktemp("clip") / "short.mp4"
    generate_match_clip(clip, seed=11, duration_s=3.0, fps=25.0, width=480, height=270)
    shared = Pipeline(tmp_path_factory.mktemp("cost"), clip, heatmap_model)
    yield shared
    shared.instance.dispose()


@pytest.fixture
def cost_env(cost_pipeline, monkeypatch):
    monkeypatch.setenv("GPU_ANALYSIS_DATA_ROOT", str(cost_pipeline.root / "data"))
    monkeypatch.setenv("GPU_ANALYSIS_MODEL", str(cost_pipeline.model))
    monkeypatch.setenv("GPU_ANALYSIS_SAMPLE_FPS", "5")
    monkeypatch.setenv("GPU_ANALYSIS_INCOMING_SETTLE_S", "0")
    return cost_pipeline


def delivered(pipeline: Pipeline, match_id: str) -> dg.ExecuteInProcessResult:
    if match_id not in pipeline.results:
        pipeline.drop(match_id)
        pipeline.run(match_id)
    result = pipeline.results[match_id]
    assert result.success
    return result


def step_seconds_from_log(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """Start to success of each step, read straight from the run's log (no retries here)."""
    starts, seconds = {}, {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or entry.step_key is None:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            starts[entry.step_key] = entry.timestamp
        elif event.event_type == DagsterEventType.STEP_SUCCESS:
            seconds[entry.step_key] = entry.timestamp - starts[entry.step_key]
    return seconds


def test_delivery_metadata_carries_the_runs_gpu_and_cpu_seconds_and_cost(cost_env):
    result = delivered(cost_env, "cost_a")
    metadata = materialization(result, "match_delivery")
    gpu_s = metadata["gpu_s"].value
    cpu_s = metadata["cpu_s"].value
    cost_usd = metadata["cost_usd_estimate"].value

    seconds = step_seconds_from_log(cost_env.instance, result.run_id)
    assert set(seconds) == {
        "match_video",
        "match_frames",
        "match_detections",
        "match_temperature_map",
        "match_delivery",
    }
    assert gpu_s == pytest.approx(seconds["match_frames"] + seconds["match_detections"], abs=2e-3)
    # Each GPU step held its node at least as long as its worker worked.
    for step in GPU_STEPS:
        assert seconds[step] >= materialization(result, step)["total_s"].value
    # The delivery priced itself just before it ended: a little less than its logged seconds.
    cpu_before_delivery = sum(
        s for k, s in seconds.items() if k not in GPU_STEPS | {"match_delivery"}
    )
    assert cpu_before_delivery < cpu_s <= cpu_before_delivery + seconds["match_delivery"] + 2e-3
    run = cost_env.instance.get_run_record_by_id(result.run_id)
    assert gpu_s + cpu_s <= run.end_time - run.start_time

    # The cost is those seconds at the pools' hourly prices (hand-checked in the test above).
    hourly = {"match_frames": 0.3344665, "match_detections": 1.1737}
    expected = sum(seconds[s] * hourly[s] for s in GPU_STEPS) / 3600 + cpu_s * 0.023205 / 3600
    assert cost_usd == pytest.approx(expected, abs=1e-6)  # the metadata rounds to 1e-6 USD
    table = metadata["cost_per_step"].value
    assert "| match_detections | gpu-inference | g5.xlarge | 0% |" in table

    # Shown on the run: its tags, as the runs list displays them.
    tags = cost_env.instance.get_run_by_id(result.run_id).tags
    assert float(tags["gpu-analysis/cost_usd_estimate"]) == cost_usd
    assert float(tags["gpu-analysis/gpu_s"]) == gpu_s


def test_daily_asset_sums_todays_deliveries(cost_env):
    runs = [delivered(cost_env, match_id) for match_id in ("cost_a", "cost_b")]
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    result = dg.materialize([match_costs_daily], instance=cost_env.instance, partition_key=today)
    assert result.success
    daily = materialization(result, "match_costs_daily")
    per_run = [materialization(run, "match_delivery") for run in runs]
    assert daily["matches"].value == 2
    for key in ("gpu_s", "cpu_s", "cost_usd_estimate"):
        assert daily[key].value == pytest.approx(sum(m[key].value for m in per_run), abs=1e-5), key
    assert daily["gpu_s"].value > 0 and daily["cost_usd_estimate"].value > 0
    assert "| cost_b |" in daily["matches_table"].value

    yesterday = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).strftime("%Y-%m-%d")
    empty = dg.materialize([match_costs_daily], instance=cost_env.instance, partition_key=yesterday)
    assert materialization(empty, "match_costs_daily")["matches"].value == 0


def test_nightly_schedule_asks_for_yesterdays_partition():
    tick = dt.datetime(2026, 3, 1, 0, 30, tzinfo=dt.UTC)
    request = nightly_match_costs(dg.build_schedule_context(scheduled_execution_time=tick))
    assert request.partition_key == "2026-02-28"
    assert request.run_key == "2026-02-28"
