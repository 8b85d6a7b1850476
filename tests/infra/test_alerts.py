"""Drift and failed infra runs raise alerts: through the real sensor, a real instance, and each sink
(a JSON-lines file, SNS on the moto server over HTTP with an SQS subscriber, a local webhook)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import ClassVar

import dagster as dg
import pytest

import infra_assets.definitions
from gpu_analysis.profile import load_profile
from infra_assets.alerts import Alert, AlertNotSent, InfraAlerts, sink_for
from infra_assets.resources import InfraResource
from infra_assets.units import AWS_UNITS
from tests.conftest import free_port
from tests.infra.test_infra_jobs import STAGING, checks, failing, run

SUBNET = "gpu-analysis-private-eu-west-3b"
ELB_TAG = "kubernetes.io/role/internal-elb"


@pytest.fixture
def staging(aws, local_aws_server, no_kubeconfig, monkeypatch):
    """The staging definitions with the alert sink a test sets, and its AWS units applied."""
    # About alerts, not the node/CNI order (test_eks_*): node groups find a network plugin.
    local_aws_server.cni_ready = lambda _cluster: True

    def build(sink: str) -> tuple[dg.Definitions, InfraAlerts]:
        monkeypatch.setenv("GPU_ANALYSIS_ALERT_SINK", sink)
        profile = load_profile("staging")
        return infra_assets.definitions.build_definitions(profile), InfraAlerts.from_profile(
            profile
        )

    ctx = InfraResource.from_profile(load_profile("staging")).unit_context()
    for unit in AWS_UNITS:
        unit(ctx).apply()
    return build


@pytest.fixture
def instance() -> dg.DagsterInstance:
    return dg.DagsterInstance.ephemeral()


def remove_subnet_tag(aws) -> str:
    ec2 = aws.client("ec2")
    subnet = ec2.describe_subnets(Filters=[{"Name": "tag:Name", "Values": [SUBNET]}])["Subnets"][0]
    ec2.delete_tags(Resources=[subnet["SubnetId"]], Tags=[{"Key": ELB_TAG}])
    return subnet["SubnetId"]


def alert_tick(defs, instance, sink: InfraAlerts, cursor: str | None) -> str:
    sensor = defs.resolve_sensor_def("infra_alerts")
    data = sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, cursor=cursor, resources={"alert_sink": sink})
    )
    return data.cursor or cursor or ""


def start_alerts(defs, instance, sink: InfraAlerts) -> str:
    # The daemon's first tick of a run status sensor only places the cursor.
    cursor = alert_tick(defs, instance, sink, None)
    assert cursor
    return cursor


def test_injected_drift_raises_exactly_one_alert_naming_the_field(staging, aws, instance, tmp_path):
    log = tmp_path / "alerts" / "infra.jsonl"
    defs, sink = staging(str(log))
    cursor = start_alerts(defs, instance, sink)
    subnet_id = remove_subnet_tag(aws)

    report = run(defs, instance, "infra_reconcile")
    assert not report.success  # a reconcile that finds drift is a failed run ...
    assert failing(report) == {"gpu_vpc"}
    cursor = alert_tick(defs, instance, sink, cursor)  # ... and somebody is told

    (alert,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert alert["kind"] == "drift" and alert["asset"] == "gpu_vpc"
    assert alert["stack"] == STAGING
    assert f"tags.{ELB_TAG}" in alert["title"]
    (row,) = [r for r in alert["fields"] if r["field"] == f"tags.{ELB_TAG}"]
    assert (row["kind"], row["resource_id"], row["observed"], row["desired"]) == (
        "subnet",
        subnet_id,
        None,
        "1",
    )
    assert alert["run_id"] == report.run_id

    # The next tick, and a passing reconcile after the repair, add nothing.
    alert_tick(defs, instance, sink, cursor)
    assert (
        defs.resolve_job_def("infra_apply")
        .execute_in_process(instance=instance, asset_selection=[dg.AssetKey("gpu_vpc")])
        .success
    )
    assert run(defs, instance, "infra_reconcile").success
    alert_tick(defs, instance, sink, cursor)
    assert len(log.read_text().splitlines()) == 1


def test_drift_alert_reaches_an_sns_topic_subscriber(staging, aws, instance):
    sns, sqs = aws.client("sns"), aws.client("sqs")
    topic = sns.create_topic(Name=f"{STAGING}-alerts")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="ops-pager")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    defs, sink = staging(topic)
    cursor = start_alerts(defs, instance, sink)
    remove_subnet_tag(aws)

    assert not run(defs, instance, "infra_reconcile").success
    alert_tick(defs, instance, sink, cursor)

    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    (message,) = messages["Messages"]
    envelope = json.loads(message["Body"])  # SNS -> SQS wraps the message in its envelope
    assert envelope["TopicArn"] == topic
    assert envelope["Subject"].startswith(f"{STAGING}: drift in gpu_vpc")
    alert = json.loads(envelope["Message"])
    assert alert["kind"] == "drift"
    assert any(r["field"] == f"tags.{ELB_TAG}" for r in alert["fields"])


def test_an_sns_sink_whose_topic_does_not_exist_says_in_one_line_what_to_do(aws):
    account = aws.client("sts").get_caller_identity()["Account"]
    topic = f"arn:aws:sns:eu-west-3:{account}:{STAGING}-alerts"  # gpu_workload_aws not applied
    sink = InfraAlerts(sink=topic, aws_region="eu-west-3", stack=STAGING)
    alert = Alert("run_failure", STAGING, f"{STAGING}: infra_apply failed", "boom", "r1", "job")
    with pytest.raises(AlertNotSent) as refused:
        sink.send(alert)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"error: alert not sent to SNS topic {topic}: ")
    assert "materialize gpu_workload_aws, which creates the topic, or set alert_sink" in message


class _Hook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, dict]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.path, json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[tuple[str, dict]]]]:
    received: list[tuple[str, dict]] = []
    handler = type("Hook", (_Hook,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # The path stands for a webhook's secret token (as Slack's and Teams' URLs carry one).
    yield f"http://127.0.0.1:{server.server_port}/hooks/T0KEN-s3cr3t", received
    server.shutdown()
    server.server_close()


def test_a_failed_infra_run_posts_one_alert_to_the_webhook_without_its_token(
    staging, instance, webhook
):
    url, received = webhook
    defs, sink = staging(url)
    cursor = start_alerts(defs, instance, sink)

    refused = run(defs, instance, "infra_teardown", {"ops": {"teardown_stack": {"config": {}}}})
    assert not refused.success
    alert_tick(defs, instance, sink, cursor)

    ((path, alert),) = received
    assert path == "/hooks/T0KEN-s3cr3t"
    assert alert["kind"] == "run_failure" and alert["job"] == "infra_teardown"
    assert f"confirm_cluster_name: {STAGING}" in alert["text"]
    assert "T0KEN-s3cr3t" not in json.dumps(alert)
    # What the sensor logs about where the alert went names the host, not the token.
    assert sink_for(url, "eu-west-3").describe() == f"webhook {url.split('/hooks')[0]}"


def test_a_successful_reconcile_raises_no_alert(staging, instance, tmp_path):
    log = tmp_path / "alerts.jsonl"
    defs, sink = staging(str(log))
    cursor = start_alerts(defs, instance, sink)
    report = run(defs, instance, "infra_reconcile")
    assert report.success and all(checks(report)[a].passed for a in ("gpu_vpc", "gpu_eks"))
    alert_tick(defs, instance, sink, cursor)
    assert not log.exists()


def test_a_reconcile_that_asks_for_remediation_still_alerts_once(staging, aws, instance, tmp_path):
    log = tmp_path / "alerts.jsonl"
    defs, sink = staging(str(log))
    cursor = start_alerts(defs, instance, sink)
    remove_subnet_tag(aws)
    remediate = {"ops": {"infra_drift": {"config": {"remediate": True}}}}
    assert not run(defs, instance, "infra_reconcile", remediate).success
    alert_tick(defs, instance, sink, cursor)
    (alert,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert alert["kind"] == "drift" and "remediation requested" in alert["text"]
