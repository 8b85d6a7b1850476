"""Creates that never make a second resource: create once, and after an unclear answer look first.

An AWS create can succeed on the server while the client sees an error (a 500 InternalError, a
503, a timeout, a dropped connection). Re-sending it blindly then makes a second resource (AWS
EC2 API reference, "Ensuring idempotency": without a client token a retried request creates a
new resource). So every create of a tagged or named resource goes through `create_or_adopt`:
the create is sent once (`AwsClients.once`), and when the answer is unclear, or says the resource
already exists, the resource is looked up by its unique tag or name and adopted if it is there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from infra_assets.aws_access import backoff_seconds, error_code, is_throttling

# Attempts at the create (each after a look-up that found nothing, or after throttling).
MAX_ATTEMPTS = 6
# Look-ups after an unclear answer before the create is tried again: EC2 and IAM reads are
# eventually consistent, so a resource created a moment ago may not be listed yet.
LOOKUPS_PER_ATTEMPT = 3

# Codes that mean "a resource with this name/token is already there": look for ours.
ALREADY_EXISTS_CODES = frozenset(
    {
        "AlreadyExists",
        "AlreadyExistsException",
        "EntityAlreadyExists",
        "ResourceAlreadyExistsException",
        "ResourceInUseException",
        "InvalidGroup.Duplicate",
        "InvalidPlacementGroup.Duplicate",
        "InvalidLaunchTemplateName.AlreadyExistsException",
        "InvalidKeyPair.Duplicate",
        "InvalidVpcEndpoint.Duplicate",
        # A subnet's CIDR is taken: by ours (an earlier create that answered 500) or by another.
        "InvalidSubnet.Conflict",
        "RouteAlreadyExists",
        "Resource.AlreadyAssociated",
        "QueueAlreadyExists",
        "BucketAlreadyOwnedByYou",
        # RDS API reference, CreateDBInstance / CreateDBSubnetGroup, "Errors".
        "DBInstanceAlreadyExists",
        "DBSubnetGroupAlreadyExists",
        # ECR API reference, CreateRepository, "Errors".
        "RepositoryAlreadyExistsException",
    }
)

# Codes of a server-side failure after which the request may or may not have been carried out.
AMBIGUOUS_CODES = frozenset(
    {
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "InternalServerException",
        "ServerException",
        "ServiceFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "Unavailable",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)

T = TypeVar("T")

_AMBIGUOUS_EXCEPTIONS = (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)


class CreateNotConfirmed(RuntimeError):
    """A create kept failing, or answered unclearly, and no resource of ours could be found."""


def is_already_exists(exc: BaseException) -> bool:
    if not isinstance(exc, ClientError):
        return False
    code = error_code(exc)
    return code in ALREADY_EXISTS_CODES or code.endswith(".Duplicate")


def is_ambiguous(exc: BaseException) -> bool:
    """The request may have been carried out: a 5xx, a server error code, a lost connection."""
    if isinstance(exc, _AMBIGUOUS_EXCEPTIONS):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return error_code(exc) in AMBIGUOUS_CODES or status >= 500
    return False


def create_or_adopt(
    what: str,
    create: Callable[[], T],
    find: Callable[[], T | None],
    log: Callable[[str], None] | None = None,
    *,
    max_attempts: int = MAX_ATTEMPTS,
) -> T:
    """Create `what` once; after an unclear or "already exists" answer, adopt what `find` finds.

    `create()` sends the create (with a client that does not re-send on 5xx: `AwsClients.once`)
    and returns the new resource's id; `find()` looks the resource up by its unique tag or name
    and returns its id, or None. Throttling is waited out. Gives up after `max_attempts` creates
    with an error that names the resource and what to do.
    """
    say = log or (lambda _message: None)
    last_error: BaseException | None = None
    for attempt in range(1, max_attempts + 1):
        try:
            return create()
        except Exception as exc:
            if is_throttling(exc):
                last_error = exc
                say(f"{what}: throttled ({_describe(exc)}); trying again")
                time.sleep(backoff_seconds(attempt))
                continue
            exists = is_already_exists(exc)
            if not (exists or is_ambiguous(exc)):
                raise
            last_error = exc
            for lookup in range(1, LOOKUPS_PER_ATTEMPT + 1):
                found = find()
                if found is not None:
                    reason = "already exists" if exists else f"answer was {_describe(exc)}"
                    say(f"{what}: adopted {found} (the create's {reason})")
                    return found
                if lookup < LOOKUPS_PER_ATTEMPT:
                    time.sleep(backoff_seconds(lookup))
            if exists:
                # There, but not found as ours: someone else's, or a name taken by another stack.
                raise CreateNotConfirmed(
                    f"{what}: AWS says it already exists ({_describe(exc)}), but no resource "
                    "carrying this stack's tags was found; if it is ours, tag it as the plan "
                    "shows and apply again, else remove it or choose another name"
                ) from exc
            say(f"{what}: create answered {_describe(exc)} and nothing was created; trying again")
            time.sleep(backoff_seconds(attempt))
    raise CreateNotConfirmed(
        f"{what}: not created after {max_attempts} attempts (last answer: "
        f"{_describe(last_error)}); no resource carrying this stack's tags was found: "
        "check the AWS service health and apply again"
    ) from last_error


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = exc.response.get("Error", {}).get("Message", "")
        return f"{status} {error_code(exc)}" + (f": {message}" if message else "")
    return f"{type(exc).__name__}: {exc}" if exc else "none"
