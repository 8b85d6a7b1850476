"""How the AWS units reach AWS: clients with retries and waiters, and the ownership tags."""

from __future__ import annotations

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

# NAT gateways take 1-2 minutes, EKS clusters ~10, node groups ~5; moto answers at once.
WAIT_SHORT = {"Delay": 10, "MaxAttempts": 60}
WAIT_LONG = {"Delay": 20, "MaxAttempts": 120}


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
