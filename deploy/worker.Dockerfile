# The image of the code location, the Dagster webserver and daemon, the run pods and the GPU step
# pods (gpu_analysis.workers.*), and of the in-cluster units, which call `helm`.
# Build from the repository root with `make image` (tags it with the staging profile's tag), or:
#   docker build -f deploy/worker.Dockerfile -t <registry>/gpu-analysis:<version> .
# CUDA and cuDNN come as wheels with onnxruntime-gpu; the NVIDIA driver comes from the node.
#
# Pinned: the base image by digest, every Python package by constraints.txt (the versions the
# test suite passed with), helm by version and the sha256 that get.helm.sh publishes beside it.
# tests/deploy/test_image.py refuses a FROM without a digest and an install without constraints.

# python:3.11-slim-bookworm, linux/amd64 + arm64 index. Refresh: `docker buildx imagetools
# inspect python:3.11-slim-bookworm` and paste its Digest here (the tag moves with each Debian
# and Python patch release; the digest does not).
ARG PYTHON_BASE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

FROM ${PYTHON_BASE} AS build
# helm v3.16.4 (Kubernetes 1.28-1.31 by Helm's version skew policy, and it talks to 1.32 for
# the install/upgrade/uninstall the units make). sha256 of helm-v3.16.4-linux-<arch>.tar.gz from
# https://get.helm.sh/helm-v3.16.4-linux-<arch>.tar.gz.sha256sum (helm/helm release v3.16.4).
ARG HELM_VERSION=3.16.4
ARG HELM_SHA256_AMD64=fc307327959aa38ed8f9f7e66d45492bb022a66c3e5da6063958254b9767d179
ARG HELM_SHA256_ARM64=d3f8f15b3d9ec8c8678fbf3280c3e5902efabe5912e2f9fcf29107efbc8ead69
# Set by BuildKit to the platform being built; the legacy builder leaves it empty (amd64).
ARG TARGETARCH
WORKDIR /src
# Python's own urllib fetches helm: the slim base has no curl, and installing one only to
# download a file would add an unpinned Debian package to the build stage.
RUN arch="${TARGETARCH:-amd64}" \
 && case "${arch}" in \
      amd64) sha256="${HELM_SHA256_AMD64}" ;; \
      arm64) sha256="${HELM_SHA256_ARM64}" ;; \
      *) echo "error: no helm sha256 pinned for ${arch}" >&2; exit 1 ;; \
    esac \
 && python -c "import urllib.request, sys; urllib.request.urlretrieve(sys.argv[1], '/tmp/helm.tgz')" \
      "https://get.helm.sh/helm-v${HELM_VERSION}-linux-${arch}.tar.gz" \
 && echo "${sha256}  /tmp/helm.tgz" | sha256sum -c - \
 && tar -xzf /tmp/helm.tgz -C /tmp "linux-${arch}/helm" \
 && install -m 0755 "/tmp/linux-${arch}/helm" /usr/local/bin/helm \
 && rm -rf /tmp/helm.tgz "/tmp/linux-${arch}"
COPY pyproject.toml README.md constraints.txt ./
COPY gpu_analysis gpu_analysis
COPY video_assets video_assets
COPY infra_assets infra_assets
# onnxruntime-gpu is pinned by constraints.txt; its [cuda,cudnn] extra brings the NVIDIA
# runtime wheels within the ranges that pinned release declares.
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt --upgrade pip \
 && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt . "onnxruntime-gpu[cuda,cudnn]"

FROM ${PYTHON_BASE}
# The uid/gid every pod runs as (video_assets/pod_specs.py WORKER_UID, the chart values'
# security contexts); no login, no home.
RUN groupadd --gid 10001 worker \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin worker
COPY --from=build /opt/venv /opt/venv
COPY --from=build /usr/local/bin/helm /usr/local/bin/helm
# The root filesystem is read-only in the pods: caches and scratch go to the /tmp emptyDir;
# helm's cache and config too (HELM_*_HOME default under $HOME).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    HELM_CACHE_HOME=/tmp/helm/cache \
    HELM_CONFIG_HOME=/tmp/helm/config \
    HELM_DATA_HOME=/tmp/helm/data
WORKDIR /tmp
USER 10001:10001
CMD ["python", "-m", "gpu_analysis.workers.preprocess"]
