"""The worker image is pinned: the profile's immutable tag, the base digest, constraints, helm."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib

import pytest

from gpu_analysis import profile as profiles
from gpu_analysis.profile import ProfileError, load_profile
from tests.conftest import REPO_ROOT, subprocess_env
from video_assets.pod_specs import WORKER_UID

DOCKERFILE = REPO_ROOT / "deploy" / "worker.Dockerfile"
DOCKERIGNORE = REPO_ROOT / "deploy" / "worker.Dockerfile.dockerignore"
REPO = "222222222222.dkr.ecr.eu-west-3.amazonaws.com/gpu-analysis"
DIGEST = "sha256:" + "0123456789abcdef" * 4


# --- the profile names an immutable image ------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [f"{REPO}:latest", REPO, "gpu-analysis", "localhost:5000/gpu-analysis"],
)
def test_the_profile_refuses_latest_or_no_tag_in_one_line(image):
    with pytest.raises(ProfileError) as refused:
        load_profile("staging", env={"GPU_ANALYSIS_IMAGE": image})
    message = str(refused.value)
    assert len(message.splitlines()) == 1
    assert "GPU_ANALYSIS_IMAGE" in message and "immutable tag or a digest" in message


@pytest.mark.parametrize(
    "image",
    [f"{REPO}:0.1.0", f"{REPO}@{DIGEST}", "localhost:5000/gpu-analysis:0.1.0-3f2a9c1"],
)
def test_the_profile_accepts_a_version_tag_or_a_digest(image):
    assert load_profile("staging", env={"GPU_ANALYSIS_IMAGE": image}).image == image


def test_a_malformed_digest_or_tag_is_refused():
    assert "64 hex digits" in profiles.image_pin_problem(f"{REPO}@sha256:abc")
    assert "not a valid tag" in profiles.image_pin_problem(f"{REPO}:-bad")


def test_a_registry_port_is_not_a_tag():
    assert profiles.split_image("localhost:5000/gpu-analysis") == (
        "localhost:5000/gpu-analysis",
        "",
    )
    assert profiles.split_image("localhost:5000/gpu-analysis:1.2") == (
        "localhost:5000/gpu-analysis",
        "1.2",
    )
    assert profiles.split_image(f"{REPO}@{DIGEST}") == (REPO, DIGEST)


def test_the_staging_image_is_the_project_version():
    # One release, one immutable tag: ECR refuses a second push of it, so a new build needs a
    # new version (pyproject.toml) and this line of the profile together.
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    repository, tag = profiles.split_image(load_profile("staging", env={}).image)
    assert (repository, tag) == (REPO, version)


# --- the Dockerfile ---------------------------------------------------------------------------


def _dockerfile() -> str:
    return DOCKERFILE.read_text()


def _args(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, flags=re.MULTILINE))


def test_every_base_image_is_pinned_by_digest():
    text = _dockerfile()
    args = _args(text)
    bases = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert bases
    for base in bases:
        # an ARG reference is resolved to its default, the value a plain `docker build` uses
        resolved = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], base)
        assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", resolved), base


def test_an_unpinned_base_is_caught():
    # the check above on a Dockerfile as it was before: a tag without a digest
    assert not re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", "python:3.11-slim-bookworm")


def test_every_pip_install_uses_the_constraints():
    text = _dockerfile().replace("\\\n", " ")
    installs = re.findall(r"pip install[^\n&]*", text)
    assert installs
    for install in installs:
        assert "-c constraints.txt" in install, install
    assert "constraints.txt" in re.findall(r"^COPY\s+([^\n]+)", _dockerfile(), re.MULTILINE)[0]
    # The build context carries only what .dockerignore lets through.
    assert "!constraints.txt" in DOCKERIGNORE.read_text().splitlines()


def test_helm_is_pinned_and_checked_by_sha256():
    text = _dockerfile()
    args = _args(text)
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["HELM_VERSION"])
    for arch in ("AMD64", "ARM64"):
        assert re.fullmatch(r"[0-9a-f]{64}", args[f"HELM_SHA256_{arch}"])
    assert "sha256sum -c" in text
    assert "get.helm.sh/helm-v${HELM_VERSION}-linux-${arch}.tar.gz" in text
    assert "COPY --from=build /usr/local/bin/helm /usr/local/bin/helm" in text


def test_the_image_runs_as_the_non_root_uid():
    users = re.findall(r"^USER\s+(\S+)", _dockerfile(), flags=re.MULTILINE)
    assert users == [f"{WORKER_UID}:{WORKER_UID}"]


# --- make image -------------------------------------------------------------------------------


def test_make_image_without_a_docker_engine_says_so_in_one_error_line(tmp_path):
    if shutil.which("make") is None:
        pytest.fail("make is not installed; the Makefile is the project's entry point")
    # A Docker CLI with no engine behind it (this machine has none either way).
    env = subprocess_env(DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock")
    done = subprocess.run(
        ["make", "--no-print-directory", "image"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "Docker" in errors[0]
