"""First apply and teardown through the private EKS endpoint: an SSM port-forward, a kubeconfig.

The cluster's API endpoint is private (seed 000), so a laptop cannot reach it, and Dagster in
the cluster cannot create or delete the cluster it runs in. The bootstrap path real teams use
for private endpoints: an SSM-managed instance in a private subnet relays a TCP stream from the
laptop to the endpoint, with no inbound port open anywhere:

    laptop 127.0.0.1:8443 --(Session Manager, HTTPS to the SSM service)--> tunnel instance
        --(VPC, 443)--> EKS private endpoint

The session uses the AWS-managed document AWS-StartPortForwardingSessionToRemoteHost with the
parameters host, portNumber and localPortNumber (AWS Systems Manager User Guide, "Start a
session", section "Port forwarding to remote hosts"; AWS Database Blog, "Securely connect to
Amazon RDS for PostgreSQL with AWS Session Manager and IAM authentication"). It needs the AWS
CLI and the Session Manager plugin on the laptop ("Install the Session Manager plugin for the
AWS CLI"). The kubeconfig points at 127.0.0.1 and verifies the API server's certificate
against the endpoint's own host name (`tls-server-name`, Kubernetes kubeconfig v1 Cluster),
so TLS is checked end to end; tokens come from `aws eks get-token`.

    python -m gpu_analysis.deploy.bootstrap apply      # make bootstrap
    python -m gpu_analysis.deploy.bootstrap teardown   # make bootstrap BOOTSTRAP=teardown
    python -m gpu_analysis.deploy.bootstrap tunnel     # hold the tunnel for kubectl / the UI
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from gpu_analysis.engine.errors import UserError
from gpu_analysis.profile import Profile, load_profile

SSM_DOCUMENT = "AWS-StartPortForwardingSessionToRemoteHost"
# The tunnel instance carries the stack's owner tag and this role tag (gpu-dagster-aws makes it).
OWNER_TAG = "gpu-analysis/stack"  # infra_assets.spec.OWNER_TAG; kept import-free for the CLI
TUNNEL_ROLE_TAG = "gpu-analysis/role"
TUNNEL_ROLE = "eks-api-tunnel"
EKS_API_PORT = 443
DEFAULT_LOCAL_PORT = 8443
# The tunnel instance's SSM agent registers a minute or two after the instance starts; until
# then start-session fails with TargetNotConnected, so the session is retried for this long.
TUNNEL_READY_TIMEOUT_S = 300.0
TUNNEL_RETRY_S = 5.0
KUBECONFIG_DIR = Path("var") / "bootstrap"
CODE_LOCATION_MODULE = "gpu_analysis.definitions"
REQUIRED_TOOLS = {
    "aws": "install the AWS CLI (https://docs.aws.amazon.com/cli/latest/userguide/"
    "getting-started-install.html)",
    "session-manager-plugin": "install the Session Manager plugin (https://docs.aws.amazon.com/"
    "systems-manager/latest/userguide/session-manager-working-with-install-plugin.html)",
}


class BootstrapError(UserError, RuntimeError):
    """The bootstrap cannot go on; the message is one line saying what to do."""


@dataclasses.dataclass(frozen=True)
class ClusterEndpoint:
    """The private API endpoint of the EKS cluster, as DescribeCluster gives it."""

    cluster_name: str
    region: str
    host: str  # e.g. 0123ABCD.gr7.eu-west-3.eks.amazonaws.com, resolvable inside the VPC
    ca_data: str  # base64 PEM of the cluster CA


@dataclasses.dataclass(frozen=True)
class Step:
    """One thing the bootstrap does, shown by --dry-run exactly as it will run."""

    what: str
    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    needs_tunnel: bool = False
    # The image step runs only when ECR lacks the profile's tag (ensure_image).
    image: str = ""

    def line(self) -> str:
        env = " ".join(f"{k}={v}" for k, v in self.env)
        tunnel = " [through the tunnel]" if self.needs_tunnel else ""
        when = " [only if ECR lacks it]" if self.image else ""
        return f"{self.what}{tunnel}{when}: {env + ' ' if env else ''}{' '.join(self.command)}"


def check_tools(which: Callable[[str], str | None] = shutil.which) -> None:
    """Refuse with one line when the AWS CLI or the Session Manager plugin is not on PATH."""
    for tool, remedy in REQUIRED_TOOLS.items():
        if which(tool) is None:
            raise BootstrapError(f"{tool} is not on PATH; {remedy}")


def cluster_endpoint(session: Any, cluster_name: str) -> ClusterEndpoint:
    from botocore.exceptions import ClientError

    try:
        cluster = session.client("eks").describe_cluster(name=cluster_name)["cluster"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            raise BootstrapError(
                f"EKS cluster {cluster_name} does not exist in {session.region_name}; "
                "`make bootstrap` creates it (its first step needs no tunnel)"
            ) from None
        raise
    endpoint = cluster.get("endpoint") or ""
    # netloc, not hostname: the host as EKS wrote it (hostname lowercases; TLS does not care,
    # but an operator comparing it with the console does).
    host = urlparse(endpoint).netloc.rsplit(":", 1)[0] if "://" in endpoint else ""
    ca_data = (cluster.get("certificateAuthority") or {}).get("data")
    if not host or not ca_data:
        raise BootstrapError(
            f"EKS cluster {cluster_name} has no endpoint or CA yet (status "
            f"{cluster.get('status')}); wait until it is ACTIVE and run again"
        )
    return ClusterEndpoint(cluster_name, session.region_name, host, ca_data)


def tunnel_instance(session: Any, stack: str) -> str:
    """The id of the stack's tunnel instance, started if it was stopped to save its hours."""
    ec2 = session.client("ec2")
    filters = [
        {"Name": f"tag:{OWNER_TAG}", "Values": [stack]},
        {"Name": f"tag:{TUNNEL_ROLE_TAG}", "Values": [TUNNEL_ROLE]},
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
    ]
    instances = [
        i for r in ec2.describe_instances(Filters=filters)["Reservations"] for i in r["Instances"]
    ]
    if not instances:
        raise BootstrapError(
            f"no instance tagged {OWNER_TAG}={stack} and {TUNNEL_ROLE_TAG}={TUNNEL_ROLE} in "
            f"{session.region_name}; gpu-dagster-aws creates it: run `make bootstrap` (its first "
            "step needs no tunnel)"
        )
    instances.sort(key=lambda i: (i["State"]["Name"] != "running", i["InstanceId"]))
    chosen = instances[0]
    if chosen["State"]["Name"] in ("stopping", "stopped"):
        ec2.get_waiter("instance_stopped").wait(InstanceIds=[chosen["InstanceId"]])
        ec2.start_instances(InstanceIds=[chosen["InstanceId"]])
    if chosen["State"]["Name"] != "running":
        ec2.get_waiter("instance_running").wait(InstanceIds=[chosen["InstanceId"]])
    return chosen["InstanceId"]


def port_forward_command(instance_id: str, endpoint: ClusterEndpoint, local_port: int) -> list[str]:
    """The `aws ssm start-session` that relays 127.0.0.1:local_port to the private endpoint."""
    parameters = {
        "host": [endpoint.host],
        "portNumber": [str(EKS_API_PORT)],
        "localPortNumber": [str(local_port)],
    }
    return [
        "aws",
        "ssm",
        "start-session",
        "--region",
        endpoint.region,
        "--target",
        instance_id,
        "--document-name",
        SSM_DOCUMENT,
        "--parameters",
        json.dumps(parameters, separators=(",", ":")),
    ]


def kubeconfig(endpoint: ClusterEndpoint, local_port: int) -> dict[str, Any]:
    """A kubeconfig for the cluster through the tunnel: 127.0.0.1, the endpoint's TLS name."""
    name = endpoint.cluster_name
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": f"https://127.0.0.1:{local_port}",
                    "certificate-authority-data": endpoint.ca_data,
                    # The certificate names the endpoint's host, not 127.0.0.1: verify it (SNI
                    # and host name check) against that name instead of switching TLS checks off.
                    "tls-server-name": endpoint.host,
                },
            }
        ],
        "users": [
            {
                "name": name,
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1beta1",
                        "command": "aws",
                        "args": [
                            "--region",
                            endpoint.region,
                            "eks",
                            "get-token",
                            "--cluster-name",
                            name,
                            "--output",
                            "json",
                        ],
                        "interactiveMode": "Never",
                    }
                },
            }
        ],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }


def write_kubeconfig(path: Path, config: dict[str, Any]) -> Path:
    """Written whole or not at all, readable by its owner only."""
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".part")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    os.chmod(partial, 0o600)
    os.replace(partial, path)
    return path


def kubeconfig_path(profile: Profile) -> Path:
    return KUBECONFIG_DIR / f"kubeconfig-{profile.cluster_name}.yaml"


def _dagster_job(job: str, config_file: str | None = None) -> tuple[str, ...]:
    command = [sys.executable, "-m", "dagster", "job", "execute", "-m", CODE_LOCATION_MODULE]
    command += ["-j", job]
    if config_file:
        command += ["-c", config_file]
    return tuple(command)


def teardown_config(profile: Profile) -> dict[str, Any]:
    """infra_teardown refuses unless its run config names the cluster (infra_assets.jobs)."""
    return {"ops": {"teardown_stack": {"config": {"confirm_cluster_name": profile.cluster_name}}}}


def steps(
    action: str, profile: Profile, kubeconfig_file: Path, config_file: str = ""
) -> list[Step]:
    """What `action` runs, in order. The first apply of the AWS units needs no tunnel (it is
    what creates the cluster and the tunnel instance); KUBECONFIG=/dev/null keeps them from
    reaching whatever cluster the laptop's own kubeconfig names."""
    base_env = (("GPU_ANALYSIS_PROFILE", profile.name),)
    tunnel_env = (*base_env, ("KUBECONFIG", str(kubeconfig_file)))
    if action == "apply":
        return [
            Step(
                "1. AWS units (VPC, EKS, IAM, bucket, RDS, ECR, tunnel instance)",
                _dagster_job("infra_apply"),
                (*base_env, ("KUBECONFIG", os.devnull)),
            ),
            Step(
                f"2. the image {profile.image} in ECR (the Dagster release waits for its pods)",
                (
                    "make",
                    "image",
                    "IMAGE_PROFILE=" + profile.name,
                    "&&",
                    "docker",
                    "push",
                    profile.image,
                ),
                image=profile.image,
            ),
            Step(
                "3. every unit again: the AWS ones are unchanged, the in-cluster ones apply",
                _dagster_job("infra_apply"),
                tunnel_env,
                needs_tunnel=True,
            ),
        ]
    if action == "teardown":
        return [
            Step(
                "1. teardown, in-cluster units first, then the AWS units",
                _dagster_job("infra_teardown", config_file or "<teardown run config>"),
                tunnel_env,
                needs_tunnel=True,
            )
        ]
    raise BootstrapError(f"unknown action {action!r}; use apply, teardown or tunnel")


def ecr_reference(image: str) -> tuple[str, str, str]:
    """`<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>` -> (registry, repository,
    tag); anything else is refused, since the cluster pulls from the stack's ECR repository."""
    from gpu_analysis.profile import split_image

    name, tag = split_image(image)
    registry, _, repository = name.partition("/")
    if ".dkr.ecr." not in registry or not repository or not tag or tag.startswith("sha256:"):
        raise BootstrapError(
            f"image {image}: the bootstrap pushes to ECR by tag; name it "
            "<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag> in the profile"
        )
    return registry, repository, tag


def image_in_ecr(session: Any, image: str) -> bool:
    from botocore.exceptions import ClientError

    _, repository, tag = ecr_reference(image)
    try:
        session.client("ecr").describe_images(
            repositoryName=repository, imageIds=[{"imageTag": tag}]
        )
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code == "ImageNotFoundException":
            return False
        if code == "RepositoryNotFoundException":
            raise BootstrapError(
                f"ECR repository {repository} does not exist; gpu-dagster-aws creates it "
                "(step 1 of `make bootstrap`)"
            ) from None
        raise
    return True


def docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    done = subprocess.run(["docker", "info"], capture_output=True, timeout=60)
    return done.returncode == 0


def ensure_image(session: Any, profile: Profile) -> None:
    """Build and push the profile's image when ECR does not have its tag yet."""
    if image_in_ecr(session, profile.image):
        print(f"   {profile.image} is in ECR", flush=True)
        return
    if not docker_engine_answers():
        raise BootstrapError(
            f"{profile.image} is not in ECR and no Docker engine answers here; build and push "
            "it where Docker runs (make image, then docker push) and run `make bootstrap` again"
        )
    registry, _, _ = ecr_reference(profile.image)
    # The ECR password goes from one process to the other through a pipe, never to the screen.
    password = subprocess.run(
        ["aws", "ecr", "get-login-password", "--region", profile.aws_region],
        capture_output=True,
        text=True,
    )
    if password.returncode != 0:
        raise BootstrapError("aws ecr get-login-password failed; check your AWS login")
    login = subprocess.run(
        ["docker", "login", "--username", "AWS", "--password-stdin", registry],
        input=password.stdout,
        capture_output=True,
        text=True,
    )
    if login.returncode != 0:
        raise BootstrapError(f"docker login to {registry} failed; check your AWS login")
    for command in (
        ["make", "image", f"IMAGE_PROFILE={profile.name}"],
        ["docker", "push", profile.image],
    ):
        if subprocess.run(command).returncode != 0:
            raise BootstrapError(f"`{' '.join(command)}` failed; fix what it says and run again")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


@contextlib.contextmanager
def open_tunnel(
    command: Sequence[str],
    local_port: int,
    timeout_s: float = TUNNEL_READY_TIMEOUT_S,
    retry_s: float = TUNNEL_RETRY_S,
) -> Iterator[None]:
    """Run the port-forward until the local port answers; stop it on the way out."""
    if not _port_free(local_port):
        raise BootstrapError(
            f"127.0.0.1:{local_port} is in use; stop what listens there or pass --local-port"
        )
    deadline = time.monotonic() + timeout_s
    process: subprocess.Popen | None = None
    last_error = ""
    try:
        while True:
            if process is None or process.poll() is not None:
                if process is not None and process.stderr is not None:
                    said = process.stderr.read().strip().splitlines()
                    last_error = said[-1] if said else f"exit {process.returncode}"
                process = subprocess.Popen(
                    list(command), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
                )
            if _port_open(local_port):
                break
            if time.monotonic() > deadline:
                raise BootstrapError(
                    f"the SSM tunnel did not open within {timeout_s:.0f} s"
                    + (f" ({last_error})" if last_error else "")
                    + "; check that the tunnel instance is Online in Systems Manager Fleet Manager"
                )
            time.sleep(retry_s if process.poll() is not None else 0.5)
        yield
    finally:
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def _run(step: Step) -> None:
    print(step.line(), flush=True)
    env = {**os.environ, **dict(step.env)}
    done = subprocess.run(list(step.command), env=env)
    if done.returncode != 0:
        raise BootstrapError(
            f"step {step.what.split('.')[0]} failed (exit {done.returncode}); its run is in the "
            "Dagster instance ($DAGSTER_HOME): fix what it says and run the same command again"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gpu_analysis.deploy.bootstrap",
        description="First apply, teardown, or a held tunnel, through the private EKS endpoint.",
    )
    parser.add_argument("action", choices=("apply", "teardown", "tunnel"))
    parser.add_argument("--local-port", type=int, default=DEFAULT_LOCAL_PORT)
    parser.add_argument(
        "--dry-run", action="store_true", help="print the steps and commands; run nothing"
    )
    args = parser.parse_args(argv)
    try:
        return _main(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except UserError as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    from gpu_analysis.deploy.values import check_deployable

    profile = load_profile()
    check_deployable(profile)  # the local profile has no cluster to bootstrap
    path = kubeconfig_path(profile)
    if args.dry_run:
        if args.action == "tunnel":
            raise BootstrapError("--dry-run shows the steps of apply or teardown, not tunnel")
        for step in steps(args.action, profile, path):
            print(step.line())
        return 0
    check_tools()

    import boto3
    from botocore.exceptions import BotoCoreError, NoCredentialsError

    session = boto3.Session(region_name=profile.aws_region)
    pending = steps(args.action, profile, path) if args.action != "tunnel" else []
    try:
        while pending and not pending[0].needs_tunnel:
            step = pending.pop(0)  # the first apply creates the cluster and the tunnel instance
            if step.image:
                print(step.line(), flush=True)
                ensure_image(session, profile)
            else:
                _run(step)
        endpoint = cluster_endpoint(session, profile.cluster_name)
        instance_id = tunnel_instance(session, profile.cluster_name)
    except NoCredentialsError:
        raise BootstrapError(
            "no AWS credentials; log in (aws sso login, or AWS_PROFILE) and run again"
        ) from None
    except BotoCoreError as exc:
        raise BootstrapError(f"AWS: {exc}") from None
    write_kubeconfig(path, kubeconfig(endpoint, args.local_port))
    command = port_forward_command(instance_id, endpoint, args.local_port)
    with tempfile.TemporaryDirectory(prefix="gpu-analysis-bootstrap-") as tmp:
        if args.action == "teardown":
            config_file = Path(tmp) / "teardown.json"
            config_file.write_text(json.dumps(teardown_config(profile)))
            pending = steps("teardown", profile, path, str(config_file))
        with open_tunnel(command, args.local_port):
            print(
                f"tunnel open: 127.0.0.1:{args.local_port} -> {endpoint.host}:{EKS_API_PORT} "
                f"via {instance_id}; KUBECONFIG={path}",
                flush=True,
            )
            if args.action == "tunnel":
                print("Ctrl-C closes it.", flush=True)
                with contextlib.suppress(KeyboardInterrupt):
                    while True:
                        time.sleep(3600)
            for step in pending:
                _run(step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
