"""The idle-base estimate prices what runs, against the seed's ~$313/month."""

from __future__ import annotations

import datetime as dt

from infra_assets.cost import estimate_idle_base
from infra_assets.units import AWS_UNITS


def test_idle_base_from_what_runs(aws_ctx):
    empty = estimate_idle_base(aws_ctx, today=dt.date(2026, 1, 15))
    assert empty.monthly_usd == 0.0  # nothing running: nothing guessed

    for unit in AWS_UNITS[:3]:  # VPC, placement group, EKS: the idle base
        unit(aws_ctx).apply()
    estimate = estimate_idle_base(aws_ctx, today=dt.date(2026, 1, 15))
    by_component = {line.component: line for line in estimate.lines}
    assert by_component["EKS control plane"].monthly_usd == 73.0
    assert by_component["System nodes"].running == "2 x m6i.large (on_demand)"
    assert by_component["System nodes"].monthly_usd == 163.52  # 2 x $0.112/h x 730 h
    assert by_component["NAT gateways"].monthly_usd == 105.12  # 3 x $0.048/h x 730 h
    # 2 nodes x (4 GiB OS + 50 GiB data) x $0.0928/GB-month
    assert by_component["System node volumes (gp3)"].monthly_usd == 10.02
    assert estimate.monthly_usd == 362.61
    assert estimate.seed_monthly_usd == 313.0
    assert "| **idle base** | | **362.61** | **313** |" in estimate.as_markdown()

    # Past the end of standard support, 1.32's control plane bills at the extended rate.
    later = estimate_idle_base(aws_ctx, today=dt.date(2026, 6, 1))
    assert {line.component: line for line in later.lines}["EKS control plane"].monthly_usd == 438.0
    assert any("extended-support rate" in note for note in later.notes)
