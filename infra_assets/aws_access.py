"""How the AWS units reach AWS: clients with retries and waiters, and the ownership tags."""

from __future__ import annotations

import os
import random
import weakref
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError

from infra_assets.spec import OWNER_TAG

if TYPE_CHECKING:
    from infra_assets.unit import UnitContext

# Identifies one resource of the spec among those we own (e.g. "nat-gateway/nat-eu-west-3a"), so
# a changed Name tag is drift to repair rather than a reason to create a second resource.
RESOURCE_TAG = "gpu-analysis/resource"

# Throttling and transient errors are retried by botocore itself ("standard" mode).
_CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 10})

# Clients for creates (`AwsClients.once`): botocore sends each request once, because a 5xx or a
# dropped connection after the server acted would make a blind re-send create a second resource;
# only throttling, which AWS answers before acting, is re-sent (by `_retry_throttling_only`).
_ONCE_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 1})
ONCE_MAX_ATTEMPTS = 5  # sends in all of one request of a `once` client, when throttled

# Error codes AWS answers when it refused a request for its rate, without acting on it
# (botocore's list, less LimitExceededException, which IAM and EKS use for quotas).
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "RequestThrottled",
        "SlowDown",
        "EC2ThrottledException",
    }
)

# Poll interval of the waiters (seconds); the tests and the local profile set it small, since
# the emulator's transitions take about a second.
POLL_ENV = "GPU_ANALYSIS_AWS_POLL_S"

# NAT gateways take 1-2 minutes, EKS clusters ~10, node groups ~5 (Delay s x MaxAttempts).
# Kept for callers not yet on wait_short()/wait_long(), which honour GPU_ANALYSIS_AWS_POLL_S.
WAIT_SHORT = {"Delay": 10, "MaxAttempts": 60}
WAIT_LONG = {"Delay": 20, "MaxAttempts": 120}


def poll_seconds(default: float) -> float:
    """`default`, or the interval GPU_ANALYSIS_AWS_POLL_S sets (a positive number of seconds)."""
    raw = os.environ.get(POLL_ENV, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{POLL_ENV}={raw!r}: need a number of seconds, e.g. 0.2") from None
    if value <= 0:
        raise ValueError(f"{POLL_ENV}={raw!r}: need a positive number of seconds")
    return value


def _waiter_config(base: dict[str, int]) -> dict[str, float | int]:
    # A shorter poll keeps the same patience: more attempts, same total wait.
    delay = poll_seconds(base["Delay"])
    budget_s = base["Delay"] * base["MaxAttempts"]
    return {"Delay": delay, "MaxAttempts": max(1, int(budget_s / delay))}


def wait_short() -> dict[str, float | int]:
    """Waiter config for NAT gateways, VPCs, instances: polls every 10 s, gives up after 10 min."""
    return _waiter_config(WAIT_SHORT)


def wait_long() -> dict[str, float | int]:
    """Waiter config for EKS clusters and node groups: every 20 s, gives up after 40 min."""
    return _waiter_config(WAIT_LONG)


def backoff_seconds(attempt: int, cap_s: float = 20.0) -> float:
    """Full-jitter exponential backoff before retry `attempt` (1-based), as AWS recommends;
    the base is 1 s, or GPU_ANALYSIS_AWS_POLL_S where set."""
    base = poll_seconds(1.0)
    return random.uniform(0, min(cap_s, base * 2 ** (attempt - 1)))


def is_throttling(exc: BaseException) -> bool:
    if not isinstance(exc, ClientError):
        return False
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return error_code(exc) in THROTTLING_CODES or status == 429


def _retry_throttling_only(
    attempts: int, response: Any = None, caught_exception: Any = None, **_: Any
) -> float | None:
    """botocore needs-retry handler of the `once` clients: a delay for throttling, else None."""
    if caught_exception is not None or response is None or attempts >= ONCE_MAX_ATTEMPTS:
        return None
    http_response, parsed = response
    code = (parsed or {}).get("Error", {}).get("Code")
    if code in THROTTLING_CODES or getattr(http_response, "status_code", None) == 429:
        return backoff_seconds(attempts)
    return None


# Service models parsed once per process, not once per session: parsing them is most of the
# cost of making a client.
_MODEL_LOADER = botocore.loaders.create_loader()

# Clients of a session, shared by every unit that runs with it (clients are thread-safe).
_CLIENTS: weakref.WeakKeyDictionary[boto3.Session, dict[str, Any]] = weakref.WeakKeyDictionary()


def new_session(region: str) -> boto3.Session:
    """A boto3 session with the standard credential and endpoint chain (AWS_ENDPOINT_URL, ...)."""
    core = botocore.session.get_session()
    core.register_component("data_loader", _MODEL_LOADER)
    return boto3.Session(botocore_session=core, region_name=region)


class AwsClients:
    """boto3 clients of one session, created once each; endpoints come from the boto3 config."""

    def __init__(self, ctx: UnitContext) -> None:
        self._session = ctx.aws
        self.region = ctx.aws.region_name or ctx.spec.region

    def client(self, service: str) -> Any:
        clients = _CLIENTS.setdefault(self._session, {})
        key = f"{service}@{self.region}"
        if key not in clients:
            clients[key] = self._session.client(
                service, region_name=self.region, config=_CLIENT_CONFIG
            )
        return clients[key]

    def once(self, service: str) -> Any:
        """A client that sends each request once, re-sending only when throttled.

        For creates: after a 5xx, a timeout or a dropped connection the server may have acted,
        so the caller looks before trying again (`infra_assets.idempotent.create_or_adopt`).
        """
        clients = _CLIENTS.setdefault(self._session, {})
        key = f"{service}@{self.region}#once"
        if key not in clients:
            client = self._session.client(service, region_name=self.region, config=_ONCE_CONFIG)
            service_id = client.meta.service_model.service_id.hyphenize()
            client.meta.events.register(
                f"needs-retry.{service_id}",
                _retry_throttling_only,
                unique_id=f"gpu-analysis-throttling-{service_id}",
            )
            clients[key] = client
        return clients[key]

    @property
    def ec2(self) -> Any:
        return self.client("ec2")

    @property
    def eks(self) -> Any:
        return self.client("eks")

    @property
    def iam(self) -> Any:
        return self.client("iam")

    @property
    def sqs(self) -> Any:
        return self.client("sqs")

    @property
    def events(self) -> Any:
        return self.client("events")


def tag_dict(tags: Iterable[Mapping[str, str]] | None) -> dict[str, str]:
    """EC2/IAM style [{"Key": k, "Value": v}] to {k: v}."""
    return {t["Key"]: t["Value"] for t in tags or ()}


def tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def tag_specifications(resource_type: str, tags: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"ResourceType": resource_type, "Tags": tag_list(tags)}]


def is_owned(tags: Mapping[str, str] | None, stack: str) -> bool:
    return (tags or {}).get(OWNER_TAG) == stack


def owner_filter(stack: str) -> dict[str, Any]:
    return {"Name": f"tag:{OWNER_TAG}", "Values": [stack]}


def error_code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def is_not_found(exc: ClientError) -> bool:
    code = error_code(exc)
    return (
        code in ("NoSuchEntity", "ResourceNotFoundException", "NotFoundException")
        or code.endswith(".NotFound")
        or code.endswith(".Unknown")
        or "NonExistentQueue" in code
    )


def version_tuple(version: str) -> tuple[int, ...]:
    """ "1.8.1" -> (1, 8, 1); a leading "v" and suffixes like "-rc1" are ignored."""
    parts = []
    for piece in version.lstrip("v").split("-")[0].split("."):
        parts.append(int(piece) if piece.isdigit() else 0)
    return tuple(parts)
