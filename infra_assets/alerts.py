"""Alerts of the cluster area: each drift finding and each failed infra run, sent to one sink.

The sink comes from the profile (`alert_sink`): an SNS topic ARN (published through boto3), an
http(s) webhook URL (a JSON POST), or a file path (one JSON object a line, the local profile).
A Dagster run-status sensor, `infra_alerts`, reads every failed run of the code location: each
failed drift check of the run (a drift finding, with its field-level diff) is one alert, and a
run that failed for any other reason is one more. A reconcile that finds drift fails its run
(see `infra_assets.assets`), so drift is always heard about. Alerts carry plan rows and error
messages, never credentials; fields whose names look secret are redacted, and a webhook URL
(whose path is often its token) is never written into an alert or a log line.
"""

# No `from __future__ import annotations`: Dagster reads the sensor's resource annotations.
import dataclasses
import datetime
import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Literal, Protocol

import dagster as dg
from botocore.exceptions import ClientError
from dagster._core.events import DagsterEventType

from gpu_analysis.profile import Profile
from infra_assets.assets import DRIFT_CHECK, DRIFT_FOUND
from infra_assets.aws_access import new_session

INFRA_JOBS = frozenset(
    {"infra_apply", "infra_reconcile", "infra_teardown", "infra_teardown_preview"}
)
_SECRET_WORDS = ("password", "secret", "token", "credential", "private_key", "privatekey")
_MAX_TEXT = 4000


@dataclasses.dataclass(frozen=True)
class Alert:
    """One thing a person must hear about: a drifted unit, or a failed infra run."""

    kind: Literal["drift", "run_failure"]
    stack: str  # the cluster / stack name of the profile
    title: str  # one line: what and where
    text: str  # the readable detail (the plan of the drifted unit, or the error)
    run_id: str
    job: str
    asset: str | None = None  # the drifted unit's asset, e.g. "gpu_vpc"
    fields: tuple[dict[str, Any], ...] = ()  # field-level diff rows (Plan.field_diffs)

    def as_json(self) -> dict[str, Any]:
        return {
            "source": "gpu-analysis/infra",
            "kind": self.kind,
            "stack": self.stack,
            "title": self.title,
            "text": self.text[:_MAX_TEXT],
            "run_id": self.run_id,
            "job": self.job,
            "asset": self.asset,
            "fields": [redact_row(row) for row in self.fields],
            "sent_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }


def redact_row(row: dict[str, Any]) -> dict[str, Any]:
    """A diff row whose field name looks like a secret keeps its name, not its values."""
    name = str(row.get("field") or "").lower().replace("-", "_")
    if any(word in name for word in _SECRET_WORDS):
        return {**row, "observed": "(redacted)", "desired": "(redacted)"}
    return row


class AlertSink(Protocol):
    def send(self, alert: Alert) -> None: ...

    def describe(self) -> str:
        """Where alerts go, safe to log (no token)."""
        ...


@dataclasses.dataclass(frozen=True)
class LogFileSink:
    path: Path

    def send(self, alert: Alert) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(alert.as_json(), sort_keys=True, default=str)
        # One write of one line in append mode: concurrent senders never interleave a record.
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")

    def describe(self) -> str:
        return f"log file {self.path}"


@dataclasses.dataclass(frozen=True)
class SnsSink:
    topic_arn: str
    region: str

    def send(self, alert: Alert) -> None:
        sns = new_session(self.region).client("sns", region_name=self.region)
        try:
            sns.publish(
                TopicArn=self.topic_arn,
                Subject=alert.title[:100],  # SNS limit: 100 characters
                Message=json.dumps(alert.as_json(), sort_keys=True, default=str),
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("NotFound", "NotFoundException"):
                raise
            # The topic is gpu-workload-aws's (infra_assets.units.workload): not made yet.
            raise AlertNotSent(
                f"error: alert not sent to {self.describe()}: the topic does not exist; "
                "materialize gpu_workload_aws, which creates the topic, or set alert_sink in "
                "the profile to another sink"
            ) from None

    def describe(self) -> str:
        return f"SNS topic {self.topic_arn}"


@dataclasses.dataclass(frozen=True)
class WebhookSink:
    url: str
    timeout_s: float = 10.0

    def send(self, alert: Alert) -> None:
        body = json.dumps(alert.as_json(), sort_keys=True, default=str).encode()
        request = urllib.request.Request(
            self.url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                status = response.status
        except OSError as exc:  # URLError, HTTPError, timeouts: say where, not the URL's token
            raise AlertNotSent(f"error: alert not sent to {self.describe()}: {exc}") from None
        if not 200 <= status < 300:
            raise AlertNotSent(f"error: alert not sent to {self.describe()}: HTTP {status}")

    def describe(self) -> str:
        parts = urllib.parse.urlsplit(self.url)
        return f"webhook {parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"


class AlertNotSent(RuntimeError):
    """The sink refused or could not be reached; the sensor tick fails and shows this line."""


def sink_for(setting: str, region: str) -> AlertSink | None:
    """The sink a profile's `alert_sink` names; None when empty (alerts stay in the Dagster UI)."""
    setting = setting.strip()
    if not setting:
        return None
    if setting.startswith("arn:aws:sns:"):
        # The topic's region is in its ARN: arn:aws:sns:<region>:<account>:<name>.
        return SnsSink(setting, setting.split(":")[3] or region)
    if setting.startswith(("https://", "http://")):
        return WebhookSink(setting)
    return LogFileSink(Path(setting).expanduser())


class InfraAlerts(dg.ConfigurableResource):
    """The profile's alert sink and the stack the alerts are about."""

    sink: str = ""
    aws_region: str = "eu-west-3"
    stack: str = ""

    @classmethod
    def from_profile(cls, profile: Profile) -> "InfraAlerts":
        return cls(
            sink=profile.alert_sink, aws_region=profile.aws_region, stack=profile.cluster_name
        )

    def send(self, alert: Alert, log: Any = None) -> bool:
        sink = sink_for(self.sink, self.aws_region)
        if sink is None:
            if log is not None:
                log.warning(f"no alert sink configured (profile alert_sink): {alert.title}")
            return False
        sink.send(alert)
        if log is not None:
            log.info(f"alert sent to {sink.describe()}: {alert.title}")
        return True


def alerts_for_run(instance: dg.DagsterInstance, run: dg.DagsterRun, stack: str) -> list[Alert]:
    """The alerts a failed run raises: one per drift finding, one for any other failure."""
    alerts = [
        _drift_alert(evaluation, run, stack)
        for evaluation in _failed_drift_checks(instance, run.run_id)
    ]
    if run.job_name not in INFRA_JOBS and not alerts:
        return []  # not ours: the match area says its own
    reasons = []
    for record in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE):
        event = record.dagster_event
        data = event.step_failure_data if event else None
        if data is None:
            continue
        user = data.user_failure_data
        message = (user.description if user and user.description else None) or (
            data.error.message.strip() if data.error else "failed"
        )
        # A drift check step fails with DRIFT_FOUND when drift was all it found.
        if alerts and message.startswith(DRIFT_FOUND):
            continue  # told by the drift alerts above
        reasons.append(f"step {event.step_key}: {message}")
    if reasons or not alerts:
        alerts.append(
            Alert(
                kind="run_failure",
                stack=stack,
                title=f"{stack}: {run.job_name} run {run.run_id[:8]} failed",
                text="\n".join(reasons) or "the run failed before any step ran (see its logs)",
                run_id=run.run_id,
                job=run.job_name,
            )
        )
    return alerts


def _failed_drift_checks(instance: dg.DagsterInstance, run_id: str) -> list[Any]:
    found = []
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = record.dagster_event.event_specific_data if record.dagster_event else None
        if (
            evaluation is not None
            and evaluation.check_name == DRIFT_CHECK
            and not evaluation.passed
            and evaluation.severity == dg.AssetCheckSeverity.ERROR
            and _meta(evaluation.metadata, "drifted") is True
        ):
            found.append(evaluation)
    return found


def drifted_assets(instance: dg.DagsterInstance, run_id: str) -> list[dg.AssetKey]:
    """The assets whose drift check found drift (severity ERROR) in this run."""
    return sorted(
        {e.asset_key for e in _failed_drift_checks(instance, run_id)},
        key=lambda key: key.to_user_string(),
    )


def _drift_alert(evaluation: Any, run: dg.DagsterRun, stack: str) -> Alert:
    asset = evaluation.asset_key.to_user_string()
    rows = _meta(evaluation.metadata, "diff") or []
    fields = ", ".join(dict.fromkeys(f"{r['kind']} {r['name']}: {r['field']}" for r in rows))
    return Alert(
        kind="drift",
        stack=stack,
        title=f"{stack}: drift in {asset}" + (f" ({fields})" if fields else ""),
        text=(evaluation.description or "")
        + (
            f"\nremediation {remediation}"
            if (remediation := _meta(evaluation.metadata, "remediation"))
            else ""
        ),
        run_id=run.run_id,
        job=run.job_name,
        asset=asset,
        fields=tuple(rows),
    )


def _meta(metadata: Any, key: str) -> Any:
    value = (metadata or {}).get(key)
    return getattr(value, "value", value)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.FAILURE,
    name="infra_alerts",
    description=(
        "Every failed infra run (and any run whose drift checks found drift) raises alerts to the "
        "profile's alert_sink: one per drift finding with its field-level diff, one per other "
        "failure."
    ),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
)
def infra_alerts(context: dg.RunStatusSensorContext, alert_sink: InfraAlerts):
    alerts = alerts_for_run(context.instance, context.dagster_run, alert_sink.stack)
    for alert in alerts:
        alert_sink.send(alert, context.log)
    if not alerts:
        return dg.SkipReason(f"run {context.dagster_run.run_id}: not an infra run")
    return None
