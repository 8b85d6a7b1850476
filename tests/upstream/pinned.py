"""Finds the pinned upstream files: a local copy, ../shared/upstream, or a checksummed download."""

# The table below repeats shared/upstream/README.md: the same paths, sources and sha256. Every
# file is checked against its sha256 wherever it comes from, so a test never validates against
# a file that differs from the one the README describes. Order of look-up:
#   1. $GPU_ANALYSIS_UPSTREAM_DIR, a folder laid out like shared/upstream (a user's own copy);
#   2. ../shared/upstream beside the repository (the team's machines and CI);
#   3. the cache ($GPU_ANALYSIS_UPSTREAM_CACHE, default ~/.cache/gpu-analysis/upstream),
#      filled by downloading the pinned URL (tag or commit, never a branch).

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_UPSTREAM = REPO_ROOT.parent / "shared" / "upstream"
LOCAL_DIR_ENV = "GPU_ANALYSIS_UPSTREAM_DIR"
CACHE_DIR_ENV = "GPU_ANALYSIS_UPSTREAM_CACHE"
DOWNLOAD_TIMEOUT_S = 30

_KARPENTER = "https://raw.githubusercontent.com/aws/karpenter-provider-aws/1ad0d78f8fa452cf27f4cf607377dd092489e2a0"
# The commit "Prepare for release v1.16.0-rc.0" is in cilium/cilium and in the fork the
# README read it from; either serves the same bytes.
_CILIUM_COMMIT = "14c2b3d05158d77086f6ba87bb8b642b9dc195b7"
_CILIUM = tuple(
    f"https://raw.githubusercontent.com/{repo}/{_CILIUM_COMMIT}"
    for repo in ("cilium/cilium", "skmatti/cilium")
)
_CRDS_V2 = "pkg/k8s/apis/cilium.io/client/crds/v2"


@dataclass(frozen=True)
class Archive:
    """A file that upstream publishes only inside a .tgz (the Cilium chart package)."""

    urls: tuple[str, ...]
    sha256: str
    member: str


@dataclass(frozen=True)
class Pinned:
    path: str  # relative to shared/upstream
    sha256: str
    urls: tuple[str, ...] = ()
    archive: Archive | None = None


NODEPOOL_CRD = "karpenter-provider-aws-v1.8.1/pkg/apis/crds/karpenter.sh_nodepools.yaml"
EC2NODECLASS_CRD = (
    "karpenter-provider-aws-v1.8.1/pkg/apis/crds/karpenter.k8s.aws_ec2nodeclasses.yaml"
)
KARPENTER_VALUES = "karpenter-provider-aws-v1.8.1/charts/karpenter/values.yaml"
CCNP_CRD = f"cilium-v1.16/{_CRDS_V2}/ciliumclusterwidenetworkpolicies.yaml"
CNP_CRD = f"cilium-v1.16/{_CRDS_V2}/ciliumnetworkpolicies.yaml"
CILIUM_VALUES_SCHEMA = "cilium-chart-1.16.5/cilium/values.schema.json"
KARPENTER_POLICY_TF = "terraform-aws-eks-v21.15.1/modules/karpenter/policy.tf"
DAGSTER_VALUES_SCHEMA = "dagster-bdb8547/helm/dagster/values.schema.json"

PINNED: dict[str, Pinned] = {
    p.path: p
    for p in (
        Pinned(
            NODEPOOL_CRD,
            "5755ea345eab77348694dfa2dd4e10e9d0ff040033f7826cf7878a50c30cd155",
            (f"{_KARPENTER}/pkg/apis/crds/karpenter.sh_nodepools.yaml",),
        ),
        Pinned(
            EC2NODECLASS_CRD,
            "69a268b8e3ea9e6450d34b54884c5f3d959b7faccbae691c84acab2820b2e376",
            (f"{_KARPENTER}/pkg/apis/crds/karpenter.k8s.aws_ec2nodeclasses.yaml",),
        ),
        Pinned(
            KARPENTER_VALUES,
            "4dc78a9a5a56f4868f085eb26311eb3cc303567993d591ad5082ebe73f999e9e",
            (f"{_KARPENTER}/charts/karpenter/values.yaml",),
        ),
        Pinned(
            CCNP_CRD,
            "d7cddb3902901d0b9a7a7fbe2a0a2c3ef798402c9e17a595e9fe76050f935c52",
            tuple(f"{base}/{_CRDS_V2}/ciliumclusterwidenetworkpolicies.yaml" for base in _CILIUM),
        ),
        Pinned(
            CNP_CRD,
            "b33f2ec319fbeba8ec6b847e9b0de643a3f7a60bf1ac2fb359f22a5a47d3ac93",
            tuple(f"{base}/{_CRDS_V2}/ciliumnetworkpolicies.yaml" for base in _CILIUM),
        ),
        Pinned(
            CILIUM_VALUES_SCHEMA,
            "0a04f79038e2049a7b66d2b9bf098b1af6abda69a9eb7b814e3f4e051b4943aa",
            archive=Archive(
                urls=(
                    "https://helm.cilium.io/cilium-1.16.5.tgz",
                    "https://raw.githubusercontent.com/cilium/charts/"
                    "181b74b7ce0264627d23b57569f5f3e2ecb711c1/cilium-1.16.5.tgz",
                ),
                sha256="182035ae7c2cf8d19490ececf618f6a11adc460ed1e7dbd38b23065f02f18b4d",
                member="cilium/values.schema.json",
            ),
        ),
        Pinned(
            KARPENTER_POLICY_TF,
            "5563c858e2ab24b5f9eba454adb27e978b8c5897a13a805cc69ab28f0cc9855b",
            (
                "https://raw.githubusercontent.com/terraform-aws-modules/terraform-aws-eks/"
                "42693d40bceb3ad80d49b0574cc3046455c2def6/modules/karpenter/policy.tf",
            ),
        ),
        Pinned(
            DAGSTER_VALUES_SCHEMA,
            "cccbf9a9956cf32b240ef7fc2f4735e03c02db369f15ff444b06492544f8503a",
            (
                "https://raw.githubusercontent.com/dagster-io/dagster/"
                "bdb8547fab497826eeec292bc160b549a0a329ef/helm/dagster/values.schema.json",
            ),
        ),
    )
}


class UpstreamUnavailable(RuntimeError):
    """A pinned file could not be found or fetched; the message is one line saying what to do."""


class ChecksumMismatch(UpstreamUnavailable):
    pass


def sha256_of(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _verified(content: bytes, expected: str, what: str) -> bytes:
    actual = sha256_of(content)
    if actual != expected:
        raise ChecksumMismatch(
            f"error: {what}: sha256 {actual} is not the pinned {expected}; "
            "the file differs from the one shared/upstream/README.md describes, refusing it"
        )
    return content


def _download(urls: tuple[str, ...]) -> tuple[bytes, str]:
    failures = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                return response.read(), url
        except OSError as error:  # URLError, HTTPError, timeouts
            failures.append(f"{url} ({error})")
    raise OSError("; ".join(failures))


def _fetch(pinned: Pinned) -> bytes:
    """The verified bytes of a pinned file from the network (unpacked from its archive if any)."""
    if pinned.archive is None:
        content, url = _download(pinned.urls)
        return _verified(content, pinned.sha256, url)
    package, url = _download(pinned.archive.urls)
    _verified(package, pinned.archive.sha256, url)
    with tarfile.open(fileobj=io.BytesIO(package), mode="r:gz") as tar:
        member = tar.extractfile(pinned.archive.member)
        if member is None:
            raise ChecksumMismatch(f"error: {url}: has no file {pinned.archive.member}")
        return _verified(member.read(), pinned.sha256, f"{url}:{pinned.archive.member}")


def cache_dir() -> Path:
    return Path(
        os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "gpu-analysis" / "upstream"
    )


def _candidates(shared_dir: Path | None) -> list[Path]:
    roots = []
    if os.environ.get(LOCAL_DIR_ENV):
        roots.append(Path(os.environ[LOCAL_DIR_ENV]))
    if shared_dir is not None and shared_dir.is_dir():
        roots.append(shared_dir)
    return roots


def upstream_bytes(
    path: str,
    *,
    shared_dir: Path | None = SHARED_UPSTREAM,
    table: dict[str, Pinned] = PINNED,
) -> bytes:
    """The pinned file's content, verified against its sha256, from wherever it can be had."""
    pinned = table[path]
    for root in _candidates(shared_dir):
        local = root / path
        if local.is_file():
            return _verified(local.read_bytes(), pinned.sha256, str(local))
    cached = cache_dir() / path
    if cached.is_file():
        return _verified(cached.read_bytes(), pinned.sha256, str(cached))
    try:
        content = _fetch(pinned)
    except OSError as error:
        raise UpstreamUnavailable(
            f"error: upstream file {path} could not be fetched ({error}); "
            f"put a copy of shared/upstream in a folder and set {LOCAL_DIR_ENV} to it "
            f"(or place the file at {cached})"
        ) from None
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(cached.name + ".part")
    partial.write_bytes(content)
    partial.replace(cached)
    return content


def upstream_text(path: str, **kwargs) -> str:
    return upstream_bytes(path, **kwargs).decode("utf-8")


_unavailable: dict[str, str] = {}  # path -> why, so later tests fail at once, not after a timeout


def required_text(path: str) -> str:
    """The file for a test that needs it: when it cannot be had, the test fails with one line."""
    if path not in _unavailable:
        try:
            return upstream_text(path)
        except UpstreamUnavailable as error:
            _unavailable[path] = str(error)
    pytest.fail(_unavailable[path], pytrace=False)
