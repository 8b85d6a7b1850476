"""What one match run costs on the seed's cluster: its steps' seconds priced by node pool.

No Dagster here: `video_assets/costs.py` feeds it a run's step seconds, and
`benchmarks/match_projection.py` feeds it projected ones. Instance prices and spot fractions
come from `infra_assets/cost.py` (their one owner, with their sources); which instance types and
what spot share a pool has comes from the node pool spec (`infra_assets/spec/kubernetes.py`), so
the estimate prices what the cluster runs.

A GPU step holds one whole node: its pod asks for one GPU, and every instance type of the GPU
pools has one (g4dn/g5 xlarge to 4xlarge), so it is priced at the pool's cheapest instance
type, the one Karpenter launches for a pod sized to it (`video_assets/pod_specs.py`). A CPU
step runs in the run pod on the coordination pools and pays its vCPU request's share of the
cheapest coordination instance. Both are blended by the role's spot share: a role with 70 %
spot pays 0.7 x spot + 0.3 x on-demand. Not included: node start-up and consolidation idle
time, the run pod while it waits on a GPU step, EBS volumes, S3 requests and data transfer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from infra_assets.cost import instance_hourly_usd, instance_vcpus
from infra_assets.spec.kubernetes import NodePoolSpec, default_nodepools

if TYPE_CHECKING:
    from gpu_analysis.profile import Profile

SECONDS_PER_HOUR = 3600.0


@dataclasses.dataclass(frozen=True)
class PoolPrice:
    """What one step pays per hour on one seed role's pools."""

    role: str
    instance_type: str
    gpu: str | None  # the pool's GPU model; None for the CPU pools
    spot_share: float  # 0..1: the role's nodes on spot
    on_demand_hourly_usd: float  # one whole instance
    spot_hourly_usd: float
    instance_share: float  # 1 for a GPU step; a CPU step's vCPU request / the instance's vCPUs

    @property
    def hourly_usd(self) -> float:
        blended = (
            self.spot_share * self.spot_hourly_usd
            + (1.0 - self.spot_share) * self.on_demand_hourly_usd
        )
        return blended * self.instance_share


def pool_price(
    role: str,
    *,
    vcpus: float | None = None,
    nodepools: tuple[NodePoolSpec, ...] | None = None,
) -> PoolPrice:
    """The price of a step on `role`'s pools: a whole instance, or `vcpus` of one."""
    pools = [p for p in (default_nodepools() if nodepools is None else nodepools) if p.role == role]
    if not pools:
        known = sorted({p.role for p in (nodepools or default_nodepools())})
        raise KeyError(
            f"error: no node pool serves role {role!r}, so its steps cannot be priced; "
            f"known roles: {known} (set the profile's nodepool_* to one of them)"
        )
    # The pools of one role offer the same instance types (spec._split); Karpenter launches
    # the cheapest that fits, and the step pods are sized to fit the smallest.
    instance_type = min(pools[0].instance_types, key=instance_hourly_usd)
    has_spot = any("spot" in p.capacity_types for p in pools)
    spot_share = pools[0].spot_share_wish / 100 if has_spot else 0.0
    if has_spot and not spot_share:
        spot_share = 1.0  # a spot-only role without a split
    share = 1.0 if vcpus is None else vcpus / instance_vcpus(instance_type)
    return PoolPrice(
        role=role,
        instance_type=instance_type,
        gpu=pools[0].gpu,
        spot_share=spot_share,
        on_demand_hourly_usd=instance_hourly_usd(instance_type, "on-demand"),
        spot_hourly_usd=instance_hourly_usd(instance_type, "spot") if has_spot else 0.0,
        instance_share=share,
    )


def profile_pool_prices(profile: Profile, run_pod_vcpus: float) -> dict[str, PoolPrice]:
    """The prices of the profile's three roles: GPU steps on the GPU pools, CPU steps in the run
    pod (`run_pod_vcpus` requested) on the coordination pools."""
    return {
        profile.nodepool_gpu_preprocessing: pool_price(profile.nodepool_gpu_preprocessing),
        profile.nodepool_gpu_inference: pool_price(profile.nodepool_gpu_inference),
        profile.nodepool_cpu: pool_price(profile.nodepool_cpu, vcpus=run_pod_vcpus),
    }


@dataclasses.dataclass(frozen=True)
class StepCost:
    step: str
    wall_s: float
    price: PoolPrice

    @property
    def cost_usd(self) -> float:
        return self.wall_s / SECONDS_PER_HOUR * self.price.hourly_usd


@dataclasses.dataclass(frozen=True)
class MatchCost:
    """One run's steps, their seconds and their estimated cost."""

    steps: tuple[StepCost, ...]

    @property
    def gpu_s(self) -> float:
        return sum(s.wall_s for s in self.steps if s.price.gpu)

    @property
    def cpu_s(self) -> float:
        return sum(s.wall_s for s in self.steps if not s.price.gpu)

    @property
    def cost_usd(self) -> float:
        return sum(s.cost_usd for s in self.steps)

    def as_markdown(self) -> str:
        rows = [
            "| step | pool | instance | spot share | wall s | $/h | est. $ |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for s in self.steps:
            p = s.price
            instance = p.instance_type
            if p.instance_share != 1.0:
                instance = f"{p.instance_share:.2g} of {instance}"
            rows.append(
                f"| {s.step} | {p.role} | {instance} | {p.spot_share:.0%} | {s.wall_s:.2f} "
                f"| {p.hourly_usd:.4f} | {s.cost_usd:.6f} |"
            )
        rows.append(
            f"| **total** | | | | **{self.gpu_s + self.cpu_s:.2f}** | | **{self.cost_usd:.6f}** |"
        )
        return "\n".join(rows)


def price_steps(
    step_seconds: Mapping[str, float] | Iterable[tuple[str, float]],
    roles: Mapping[str, str],
    prices: Mapping[str, PoolPrice],
) -> MatchCost:
    """Price each step's wall seconds on its role's pools (`roles`: step -> role)."""
    items = step_seconds.items() if isinstance(step_seconds, Mapping) else step_seconds
    steps = []
    for step, wall_s in items:
        role = roles.get(step)
        if role not in prices:
            raise KeyError(
                f"error: step {step!r} runs on role {role!r}, which has no price; "
                f"priced roles: {sorted(prices)}"
            )
        steps.append(StepCost(step, float(wall_s), prices[role]))
    return MatchCost(tuple(steps))
