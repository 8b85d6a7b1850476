# The image of the code location, its run pods and the GPU step pods (gpu_analysis.workers.*).
# Build from the repository root:  docker build -f deploy/worker.Dockerfile -t gpu-analysis .
# CUDA and cuDNN come as wheels with onnxruntime-gpu; the NVIDIA driver comes from the node.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gpu_analysis gpu_analysis
COPY video_assets video_assets
COPY infra_assets infra_assets
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir . "onnxruntime-gpu[cuda,cudnn]"

FROM python:3.11-slim-bookworm
# The uid/gid the step pods run as (video_assets/pod_specs.py WORKER_UID); no login, no home.
RUN groupadd --gid 10001 worker \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin worker
COPY --from=build /opt/venv /opt/venv
# The root filesystem is read-only in the pods: caches and scratch go to the /tmp emptyDir.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /tmp
USER 10001:10001
CMD ["python", "-m", "gpu_analysis.workers.preprocess"]
