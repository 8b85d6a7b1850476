"""The infrastructure resource: the profile's cluster, AWS and Kubernetes from standard config."""

from __future__ import annotations

import dataclasses
from typing import Any

import dagster as dg

from gpu_analysis.profile import Profile
from infra_assets.aws_access import new_session
from infra_assets.spec import ClusterSpec
from infra_assets.unit import UnitContext


class InfraResource(dg.ConfigurableResource):
    """Which cluster the stack is (from the profile) and how units reach AWS and Kubernetes.

    No credentials here: boto3 finds them (and `AWS_ENDPOINT_URL`) in its standard configuration,
    the Kubernetes client in the kubeconfig (`KUBECONFIG`, ~/.kube/config) or in-cluster.
    """

    aws_region: str
    cluster_name: str
    environment: str
    account_id: str = ""
    bucket: str = ""  # the match bucket (profile `bucket`); empty: "<cluster name>-matches"
    helm_binary: str = "helm"

    @classmethod
    def from_profile(cls, profile: Profile) -> InfraResource:
        return cls(
            aws_region=profile.aws_region,
            cluster_name=profile.cluster_name,
            environment=profile.name,
            account_id=profile.aws_account_id,
            bucket=profile.bucket,
        )

    def cluster_spec(self) -> ClusterSpec:
        return cluster_spec_for(
            self.aws_region, self.cluster_name, self.environment, self.account_id, self.bucket
        )

    def unit_context(self, log: Any = None) -> UnitContext:
        return UnitContext(
            spec=self.cluster_spec(),
            aws=new_session(self.aws_region),
            kube=kubernetes_client(),
            helm_binary=self.helm_binary,
            log=log,
        )


def cluster_spec_for(
    region: str, cluster_name: str, environment: str, account_id: str = "", bucket: str = ""
) -> ClusterSpec:
    """The seed's cluster, named after the profile's cluster (which is also the stack tag)."""
    base = ClusterSpec()
    spec = dataclasses.replace(
        base,
        stack=cluster_name,
        cluster_name=cluster_name,
        environment=environment,
        region=region,
        account_id=account_id or base.account_id,
    )
    if bucket:
        spec = dataclasses.replace(spec, workload=dataclasses.replace(spec.workload, bucket=bucket))
    if region != base.region:
        # Same zone letters in another region (a, b, c), so a profile can move the stack.
        def move(zone: str) -> str:
            return region + zone.removeprefix(base.region)

        spec = dataclasses.replace(
            spec,
            vpc=dataclasses.replace(
                spec.vpc, availability_zones=tuple(move(z) for z in spec.vpc.availability_zones)
            ),
            placement_group=dataclasses.replace(
                spec.placement_group,
                availability_zone=move(spec.placement_group.availability_zone),
            ),
        )
    return spec


def kubernetes_client() -> Any:
    """An ApiClient from in-cluster config or the kubeconfig; None when neither exists."""
    from infra_assets.kube import api_client_from_environment

    return api_client_from_environment()
