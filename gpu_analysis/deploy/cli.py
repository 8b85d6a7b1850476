"""The `gpu-analysis deploy-values` subcommand: the Dagster chart values an operator can diff."""

from __future__ import annotations

import argparse
import sys


def _cmd_deploy_values(args: argparse.Namespace) -> int:
    import yaml

    from gpu_analysis.deploy.values import PENDING_POSTGRES_HOST, check_deployable, dagster_values
    from gpu_analysis.profile import load_profile

    profile = load_profile()
    check_deployable(profile)  # the local profile: one error line, nothing on stdout
    chart_values = dagster_values(profile, postgres_host=args.postgres_host)
    if not args.postgres_host:
        # On stderr, so stdout stays the YAML to diff against `helm get values`.
        print(
            f"note: postgresqlHost is {PENDING_POSTGRES_HOST!r}; pass --postgres-host with the "
            "RDS endpoint that gpu-dagster-aws created (its materialization shows it)",
            file=sys.stderr,
        )
    sys.stdout.write(yaml.safe_dump(chart_values, sort_keys=False, width=100))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "deploy-values",
        help="print the Dagster Helm chart values of the active profile (YAML)",
        description="Print the values of the official Dagster chart generated for the active "
        "profile ($GPU_ANALYSIS_PROFILE), secrets as Secret names only. Compare with "
        "`helm get values dagster -n <namespace> -o yaml`.",
    )
    p.add_argument(
        "--postgres-host",
        metavar="HOST",
        help="the RDS endpoint address of the Dagster database (gpu-dagster-aws)",
    )
    p.set_defaults(func=_cmd_deploy_values)
