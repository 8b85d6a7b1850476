"""The bootstrap through the private endpoint: its kubeconfig over TLS, its commands, errors."""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import json
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import kubernetes.client
import kubernetes.config
import pytest
import urllib3
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gpu_analysis.deploy import bootstrap
from gpu_analysis.deploy.bootstrap import BootstrapError, ClusterEndpoint
from gpu_analysis.profile import load_profile
from infra_assets.helm import kubeconfig_for
from tests.conftest import REPO_ROOT, free_port

STAGING = load_profile("staging", env={})
EKS_HOST = "0123456789ABCDEF0123456789ABCDEF.gr7.eu-west-3.eks.amazonaws.com"


# --- a real TLS server with the certificate EKS serves: the endpoint's host name, its own CA ---


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificates(tmp_path: Path) -> tuple[str, Path, Path]:
    """(CA as base64 PEM, server cert file, server key file) for EKS_HOST only."""
    now = dt.datetime.now(dt.UTC)
    ca_key, server_key = _key(), _key()
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("kubernetes"))
        .issuer_name(_name("kubernetes"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server = (
        x509.CertificateBuilder()
        .subject_name(_name("kube-apiserver"))
        .issuer_name(ca.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        # Like EKS's: the endpoint's DNS name and the in-cluster names, never 127.0.0.1.
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(EKS_HOST), x509.DNSName("kubernetes")]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "server.crt", tmp_path / "server.key"
    cert_file.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    return base64.b64encode(ca_pem).decode(), cert_file, key_file


VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.9-eks-113cf36",
    "gitCommit": "0",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.23",
    "compiler": "gc",
    "platform": "linux/amd64",
}


class _VersionHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(VERSION).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """What the tunnel's local end reaches: a TLS server with the EKS endpoint's certificate."""
    ca_data, cert_file, key_file = _certificates(tmp_path)
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _VersionHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield port, ca_data
    finally:
        server.shutdown()
        server.server_close()


def _client(path: Path) -> kubernetes.client.ApiClient:
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(path), client_configuration=config)
    return kubernetes.client.ApiClient(config)


@pytest.fixture
def no_aws_tokens(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The kubeconfig's exec user runs `aws eks get-token` when loaded; this server needs no
    # token, so the loader's exec call may fail (it logs and goes on) without real credentials.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


def test_the_kubeconfig_reaches_the_endpoint_on_localhost_with_its_tls_name(
    api_server, tmp_path, no_aws_tokens
):
    port, ca_data = api_server
    endpoint = ClusterEndpoint(STAGING.cluster_name, STAGING.aws_region, EKS_HOST, ca_data)
    path = bootstrap.write_kubeconfig(tmp_path / "kubeconfig", bootstrap.kubeconfig(endpoint, port))
    assert path.stat().st_mode & 0o777 == 0o600
    client = _client(path)
    assert client.configuration.host == f"https://127.0.0.1:{port}"
    # A real TLS handshake: the certificate names EKS_HOST and is signed by the cluster CA.
    assert kubernetes.client.VersionApi(client).get_code().git_version == VERSION["gitVersion"]


def test_without_the_tls_name_the_same_kubeconfig_is_refused(api_server, tmp_path, no_aws_tokens):
    port, ca_data = api_server
    endpoint = ClusterEndpoint(STAGING.cluster_name, STAGING.aws_region, EKS_HOST, ca_data)
    config = bootstrap.kubeconfig(endpoint, port)
    del config["clusters"][0]["cluster"]["tls-server-name"]
    path = bootstrap.write_kubeconfig(tmp_path / "kubeconfig", config)
    api = kubernetes.client.VersionApi(_client(path))
    api.api_client.configuration.retries = 0
    with pytest.raises(urllib3.exceptions.MaxRetryError, match=r"CERTIFICATE_VERIFY_FAILED|match"):
        api.get_code()


def test_the_kubeconfig_authenticates_with_aws_eks_get_token():
    endpoint = ClusterEndpoint(STAGING.cluster_name, STAGING.aws_region, EKS_HOST, "Q0E=")
    user = bootstrap.kubeconfig(endpoint, 8443)["users"][0]["user"]
    assert user == {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "aws",
            "args": [
                "--region",
                "eu-west-3",
                "eks",
                "get-token",
                "--cluster-name",
                "staging-eu-west-3-gpu-analysis",
                "--output",
                "json",
            ],
            "interactiveMode": "Never",
        }
    }
    assert "token" not in user and "client-key-data" not in user  # no credential in the file


def test_helm_gets_the_tls_name_too(api_server, tmp_path, no_aws_tokens):
    # The in-cluster units run `helm` with a kubeconfig made from the Python client
    # (infra_assets.helm.kubeconfig_for): through the tunnel it must keep the TLS name, or helm
    # refuses the endpoint's certificate for 127.0.0.1 at the first release (gpu-cilium).
    port, ca_data = api_server
    endpoint = ClusterEndpoint(STAGING.cluster_name, STAGING.aws_region, EKS_HOST, ca_data)
    path = bootstrap.write_kubeconfig(tmp_path / "kubeconfig", bootstrap.kubeconfig(endpoint, port))
    for_helm = kubeconfig_for(_client(path))
    cluster = for_helm["clusters"][0]["cluster"]
    assert cluster["server"] == f"https://127.0.0.1:{port}"
    assert cluster.get("tls-server-name") == EKS_HOST


# --- the commands it runs ---------------------------------------------------------------------


def test_the_port_forward_uses_the_remote_host_document():
    endpoint = ClusterEndpoint(STAGING.cluster_name, "eu-west-3", EKS_HOST, "Q0E=")
    command = bootstrap.port_forward_command("i-0123456789abcdef0", endpoint, 8443)
    assert command[:3] == ["aws", "ssm", "start-session"]
    options = dict(zip(command[3::2], command[4::2], strict=True))
    assert options["--target"] == "i-0123456789abcdef0"
    assert options["--region"] == "eu-west-3"
    assert options["--document-name"] == "AWS-StartPortForwardingSessionToRemoteHost"
    assert json.loads(options["--parameters"]) == {
        "host": [EKS_HOST],
        "portNumber": ["443"],
        "localPortNumber": ["8443"],
    }


def _bootstrap(*args: str, profile: str = "staging", path: str | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_ANALYSIS_")}
    env["GPU_ANALYSIS_PROFILE"] = profile
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", "gpu_analysis.deploy.bootstrap", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_apply_dry_run_shows_the_two_applies_and_where_the_tunnel_is_needed():
    done = _bootstrap("apply", "--dry-run")
    assert done.returncode == 0, done.stderr
    first, image, second = done.stdout.strip().splitlines()
    kubeconfig = f"KUBECONFIG=var/bootstrap/kubeconfig-{STAGING.cluster_name}.yaml"
    # first: the AWS units, never through whatever cluster the laptop's kubeconfig names
    assert "KUBECONFIG=/dev/null" in first and "-j infra_apply" in first
    assert "through the tunnel" not in first
    # then the image the release's pods pull, before the release waits for them
    assert "only if ECR lacks it" in image and f"docker push {STAGING.image}" in image
    assert kubeconfig in second and "-j infra_apply" in second
    assert "through the tunnel" in second
    for line in (first, second):
        assert "GPU_ANALYSIS_PROFILE=staging" in line
        assert "dagster job execute -m gpu_analysis.definitions" in line


def test_teardown_dry_run_goes_through_the_tunnel_and_names_the_cluster():
    done = _bootstrap("teardown", "--dry-run")
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.strip().splitlines()
    assert "-j infra_teardown -c" in line and "through the tunnel" in line
    assert bootstrap.teardown_config(STAGING) == {
        "ops": {"teardown_stack": {"config": {"confirm_cluster_name": STAGING.cluster_name}}}
    }


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def test_without_the_aws_cli_it_says_so_in_one_line(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    line = _one_error_line(_bootstrap("apply", path=str(empty)))
    assert "aws is not on PATH" in line and "install the AWS CLI" in line


def test_without_the_session_manager_plugin_it_says_so_in_one_line(tmp_path):
    tools = tmp_path / "bin"
    tools.mkdir()
    # The check looks the tools up on PATH and runs neither: any executable named aws will do.
    (tools / "aws").symlink_to(sys.executable)
    line = _one_error_line(_bootstrap("tunnel", path=str(tools)))
    assert "session-manager-plugin is not on PATH" in line
    assert "session-manager-working-with-install-plugin" in line


def test_the_local_profile_has_nothing_to_bootstrap():
    line = _one_error_line(_bootstrap("apply", "--dry-run", profile="local"))
    assert "local profile does not deploy to a cluster" in line


# --- what it looks up in AWS (the local AWS over HTTP) -------------------------------------------


def _cluster(aws, aws_server) -> None:
    # EKS accepts a new role only after IAM propagation, which this test does not study.
    aws_server.configure(iam_propagation_s=0.0)
    iam = aws.client("iam")
    role = iam.create_role(RoleName="eks", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    aws.client("eks").create_cluster(
        name=STAGING.cluster_name,
        roleArn=role,
        resourcesVpcConfig={"endpointPrivateAccess": True, "endpointPublicAccess": False},
    )


def _instance(aws, *, role: str = bootstrap.TUNNEL_ROLE, stack: str = STAGING.cluster_name) -> str:
    ec2 = aws.client("ec2")
    tags = [
        {"Key": bootstrap.OWNER_TAG, "Value": stack},
        {"Key": bootstrap.TUNNEL_ROLE_TAG, "Value": role},
    ]
    return ec2.run_instances(
        ImageId="ami-12c6146b",  # one of the AMIs moto ships
        InstanceType="t4g.nano",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )["Instances"][0]["InstanceId"]


def test_the_endpoint_and_the_tunnel_instance_are_found_by_name_and_tags(aws, aws_server):
    _cluster(aws, aws_server)
    _instance(aws, role="something-else")
    _instance(aws, stack="another-stack")
    wanted = _instance(aws)
    endpoint = bootstrap.cluster_endpoint(aws, STAGING.cluster_name)
    live = aws.client("eks").describe_cluster(name=STAGING.cluster_name)["cluster"]
    assert endpoint.host == urlparse(live["endpoint"]).netloc
    assert endpoint.ca_data == live["certificateAuthority"]["data"]
    assert bootstrap.tunnel_instance(aws, STAGING.cluster_name) == wanted


def test_a_stopped_tunnel_instance_is_started(aws):
    wanted = _instance(aws)
    ec2 = aws.client("ec2")
    ec2.stop_instances(InstanceIds=[wanted])
    assert bootstrap.tunnel_instance(aws, STAGING.cluster_name) == wanted
    state = ec2.describe_instances(InstanceIds=[wanted])["Reservations"][0]["Instances"][0]
    assert state["State"]["Name"] == "running"


def test_no_cluster_or_no_tunnel_instance_is_one_line_saying_what_to_run(aws):
    with pytest.raises(BootstrapError, match=r"does not exist.*make bootstrap") as refused:
        bootstrap.cluster_endpoint(aws, STAGING.cluster_name)
    assert len(str(refused.value).splitlines()) == 1
    with pytest.raises(BootstrapError, match="gpu-dagster-aws creates it") as refused:
        bootstrap.tunnel_instance(aws, STAGING.cluster_name)
    assert len(str(refused.value).splitlines()) == 1


def _repository(aws) -> str:
    _, repository, _ = bootstrap.ecr_reference(STAGING.image)
    aws.client("ecr").create_repository(repositoryName=repository, imageTagMutability="IMMUTABLE")
    return repository


def test_the_image_is_looked_up_in_ecr_by_the_profiles_tag(aws):
    repository = _repository(aws)
    assert bootstrap.image_in_ecr(aws, STAGING.image) is False
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 1,
            "digest": "sha256:" + "0" * 64,
        },
        "layers": [],
    }
    _, _, tag = bootstrap.ecr_reference(STAGING.image)
    aws.client("ecr").put_image(
        repositoryName=repository, imageManifest=json.dumps(manifest), imageTag=tag
    )
    assert bootstrap.image_in_ecr(aws, STAGING.image) is True


def test_a_missing_image_without_a_docker_engine_is_one_line_saying_what_to_do(
    aws, monkeypatch, tmp_path
):
    _repository(aws)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    with pytest.raises(BootstrapError, match="not in ECR and no Docker engine") as refused:
        bootstrap.ensure_image(aws, STAGING)
    assert "make image" in str(refused.value) and len(str(refused.value).splitlines()) == 1


def test_no_repository_says_which_unit_makes_it(aws):
    with pytest.raises(BootstrapError, match="gpu-dagster-aws creates it"):
        bootstrap.image_in_ecr(aws, STAGING.image)


def test_an_image_outside_ecr_is_refused():
    with pytest.raises(BootstrapError, match="pushes to ECR by tag"):
        bootstrap.ecr_reference("ghcr.io/someone/gpu-analysis:0.1.0")


# --- the tunnel process -----------------------------------------------------------------------


def test_a_session_that_never_connects_ends_in_one_line_with_its_last_words(tmp_path):
    # What `aws ssm start-session` does while the instance's agent is not registered yet.
    says = "An error occurred (TargetNotConnected) when calling the StartSession operation"
    command = [sys.executable, "-c", f"import sys; sys.exit({says!r})"]
    with (
        pytest.raises(BootstrapError, match=r"did not open within 1 s.*TargetNotConnected"),
        bootstrap.open_tunnel(command, free_port(), timeout_s=1.0, retry_s=0.1),
    ):
        pass


def test_a_busy_local_port_is_refused_before_anything_starts():
    with bootstrap.socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with (
            pytest.raises(BootstrapError, match=rf"127\.0\.0\.1:{port} is in use.*--local-port"),
            bootstrap.open_tunnel(["true"], port, timeout_s=1.0),
        ):
            pass


def test_the_tunnel_is_held_while_the_steps_run_and_stopped_after(tmp_path):
    # A process that listens on the local port, as the Session Manager plugin does once the
    # session is up; it is stopped when the block ends.
    port = free_port()
    listen = (
        "import socket, time; s = socket.socket(); "
        f"s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(60)"
    )
    with bootstrap.open_tunnel([sys.executable, "-c", listen], port, timeout_s=20.0):
        assert bootstrap._port_open(port)
    assert bootstrap._port_free(port)


def test_the_kubeconfig_file_is_yaml_the_loader_reads(tmp_path):
    endpoint = ClusterEndpoint(STAGING.cluster_name, "eu-west-3", EKS_HOST, "Q0E=")
    path = bootstrap.write_kubeconfig(tmp_path / "k" / "config", bootstrap.kubeconfig(endpoint, 1))
    assert yaml.safe_load(path.read_text())["current-context"] == STAGING.cluster_name
    assert not list(path.parent.glob("*.part"))  # written whole


# --- the README's section ---------------------------------------------------------------------


def _readme_section() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    start = text.index("## Running on the real cluster")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_the_readme_path_needs_no_public_endpoint_and_is_one_bootstrap():
    section = _readme_section()
    commands = [line.strip() for line in section.splitlines() if line.startswith("    ")]
    assert (
        "make bootstrap      # the one apply: AWS units, the image, the tunnel, then the rest"
        in (commands)
    )
    # `aws eks update-kubeconfig` writes the endpoint itself as the server: public access only
    assert "update-kubeconfig" not in section
    assert "```mermaid" in section


def test_the_readme_idle_cost_adds_up():
    rows = [
        line.split("|")[1:-1]
        for line in _readme_section().splitlines()
        if line.startswith("| ") and not line.startswith("| what") and "---" not in line
    ]
    *items, total = rows
    figures = [float(x) for _, cost in items for x in cost.split("+")]
    stated = float(total[1].replace("*", "").split()[0])
    assert round(sum(figures), 2) == stated
