"""EKS Pod Identity associations: a service account's AWS role, observed, planned, made, deleted."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from infra_assets.aws_access import AwsClients, is_not_found, is_owned
from infra_assets.aws_iam import create_after_principal_propagates
from infra_assets.plan import Change

KIND = "pod-identity-association"


def cluster_ownership(eks: Any, cluster: str, stack: str) -> str:
    """ "ours", "absent", or "foreign" (a cluster of that name without our tag): associations
    and access entries go only into ours."""
    try:
        described = eks.describe_cluster(name=cluster)["cluster"]
    except ClientError as exc:
        if is_not_found(exc):
            return "absent"
        raise
    return "ours" if is_owned(described.get("tags"), stack) else "foreign"


@dataclasses.dataclass(frozen=True)
class PodIdentityAssociation:
    """`namespace/service_account`'s association in `cluster`, and the tags we give it."""

    cluster: str
    namespace: str
    service_account: str
    tags: dict[str, str]

    @property
    def name(self) -> str:
        return f"{self.namespace}/{self.service_account}"

    @property
    def what(self) -> str:
        return f"Pod Identity association {self.name}"

    def observe(self, eks: Any) -> dict[str, Any] | None:
        """The association as DescribePodIdentityAssociation answers it; None when there is none."""
        summaries = eks.list_pod_identity_associations(
            clusterName=self.cluster, namespace=self.namespace, serviceAccount=self.service_account
        )["associations"]
        if not summaries:
            return None
        return eks.describe_pod_identity_association(
            clusterName=self.cluster, associationId=summaries[0]["associationId"]
        )["association"]

    def plan_change(
        self, compare: Callable[..., Change], observed: dict[str, Any] | None, role_arn: str
    ) -> Change:
        """create, update (role, tags) or keep, from `observed` (`observe()`'s answer)."""
        return compare(
            KIND,
            self.name,
            None
            if observed is None
            else {"role": observed.get("roleArn"), "tags": observed.get("tags")},
            {"role": role_arn, "tags": self.tags},
            observed.get("associationArn") if observed else None,
        )

    def create(
        self, aws: AwsClients, role_arn: str, stack: str, log: Callable[[str], None] | None = None
    ) -> str:
        """Make the association once, after IAM has propagated the role; returns its id. After
        an unclear answer one of ours (by the owner tag) is adopted, never someone else's."""
        return create_after_principal_propagates(
            self.what,
            lambda: aws.once("eks").create_pod_identity_association(
                clusterName=self.cluster,
                namespace=self.namespace,
                serviceAccount=self.service_account,
                roleArn=role_arn,
                tags=self.tags,
            )["association"]["associationId"],
            lambda: self.observe(aws.eks),
            "associationId",
            stack,
            log,
        )

    def update(
        self, eks: Any, association_id: str, role_arn: str, change: Change, diff_fields: set[str]
    ) -> None:
        """Point the association at `role_arn`, and tag it when the plan says its tags drifted."""
        eks.update_pod_identity_association(
            clusterName=self.cluster, associationId=association_id, roleArn=role_arn
        )
        if "tags" in diff_fields and change.resource_id:
            eks.tag_resource(resourceArn=change.resource_id, tags=self.tags)

    def delete_change(self, observed: dict[str, Any]) -> Change:
        """The teardown plan's line for an observed association (id: its ARN)."""
        return Change("delete", KIND, self.name, observed["associationArn"])

    def delete(self, eks: Any, association_id: str) -> None:
        eks.delete_pod_identity_association(clusterName=self.cluster, associationId=association_id)
