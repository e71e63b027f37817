# The reproduction image (GPU), and with --build-arg VARIANT=cpu the CPU image, from one recipe (docs/docker.md).
# Every package is pinned by a lock file (requirements/lock-cuda.txt, lock-cpu.txt). From the repository root:
#   docker build --build-arg GIT_COMMIT="$(git rev-parse HEAD)" -t repro .
#   docker run --rm --gpus all --ipc=host -u "$(id -u):$(id -g)" -v "$PWD/results:/work/results" \
#       -v /path/to/data:/data:ro repro repro run lstm-ptb --machines 8 --data-dir /data/ptb
#   docker build --build-arg VARIANT=cpu --build-arg GIT_COMMIT="$(git rev-parse HEAD)" -t repro:cpu .
# --ipc=host: Docker's default 64 MB /dev/shm is too small for NCCL's shared-memory transport, gloo between workers
# of one machine and DataLoader workers (they fail with "No space left on device" / bus errors); --shm-size=16g is
# the alternative.
#
# Build arguments:
#   VARIANT         gpu (default): on the official PyTorch CUDA runtime image, whose torch 2.14.1+cu130,
#                   cuDNN 9.24.0.43, cuBLAS 13.1.1.3 and NCCL are the versions of requirements/lock-cuda.txt;
#                   cpu: CPU-only torch from the PyTorch CPU index (requirements/lock-cpu.txt) in a virtual
#                   environment on Python 3.11.
#   GPU_BASE_IMAGE, CPU_BASE_IMAGE   the variants' bases. The GPU base's digest: look it up with
#                   docker buildx imagetools inspect pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime
#                   and pin it as GPU_BASE_IMAGE=...@sha256:<digest> (docs/docker.md).
#                   DIGEST-PLACEHOLDER: not yet recorded (no registry was reachable where this file was written).
#                   CPU_BASE_IMAGE: any image with python3 3.11 and its venv module (CI passes one made from Debian
#                   packages).
#   LOCK            the pinned set to install (default: the variant's lock above)
#   EXTRAS          "dev" adds the test tools and tests/ (default: runtime only)
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL   a mirror, for the build only (not kept in the image)
#   GIT_COMMIT      recorded in every run's config.json as git_commit (the image has no .git)
# BuildKit (Docker's builder since 23.0) builds only the chosen variant's base. The legacy builder
# (DOCKER_BUILDKIT=0, or a docker client without buildx) builds every stage, so it pulls the GPU base for a CPU
# image too unless GPU_BASE_IMAGE names an image at hand (CI passes CPU_BASE_IMAGE's).
ARG VARIANT=gpu
ARG GPU_BASE_IMAGE=pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime
ARG CPU_BASE_IMAGE=python:3.11-slim-bookworm
ARG EXTRAS=""

# GPU: torch and the CUDA libraries are the base's, in its system Python (PEP 668, "externally managed"). The
# image is the environment, so pip installs into that Python, beside the base's torch.
FROM ${GPU_BASE_IMAGE} AS base-gpu
ENV PIP_BREAK_SYSTEM_PACKAGES=1 \
    TRITON_CACHE_DIR=/tmp/.triton

# CPU: a virtual environment, so that no package of the base's Python decides a version.
FROM ${CPU_BASE_IMAGE} AS base-cpu
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# DL3006: a stage of this file chosen by VARIANT, not an image to tag.
# hadolint ignore=DL3006
FROM base-${VARIANT} AS image
ARG VARIANT
ARG LOCK=""
ARG EXTRAS
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /opt/repro
# Dependencies first (one cached layer as long as the lock is unchanged), at the locked versions and without
# resolving (--no-deps): only the lock decides. On the GPU base, torch, torchvision, triton and the nvidia-*
# libraries of the lock are the base's, and pip leaves them.
COPY requirements/ requirements/
RUN case "${VARIANT}" in \
        gpu) lock=requirements/lock-cuda.txt ;; \
        cpu) lock=requirements/lock-cpu.txt ;; \
        *) echo "VARIANT must be gpu or cpu, got '${VARIANT}'" >&2; exit 1 ;; \
    esac \
    && lock="${LOCK:-$lock}" \
    && pip install --no-cache-dir --no-deps -r "${lock}" \
    && cp "${lock}" /opt/repro/lock.txt \
    && rm -rf /opt/repro/requirements
COPY pyproject.toml README.md ./
COPY repro/ repro/
COPY tasks/ tasks/
# The project itself, without its dependencies (the lock's, above). DL3013: `.` is the project, not a package
# to pin.
# hadolint ignore=DL3013
RUN if [ -n "${EXTRAS}" ]; then \
        pip install --no-cache-dir --no-build-isolation ".[${EXTRAS}]"; \
    else \
        pip install --no-cache-dir --no-build-isolation --no-deps .; \
    fi \
    && rm -rf build ./*.egg-info \
    && if getent passwd 1000 >/dev/null; then userdel "$(getent passwd 1000 | cut -d: -f1)"; fi \
    && if getent group 1000 >/dev/null; then groupdel "$(getent group 1000 | cut -d: -f1)"; fi \
    && useradd --uid 1000 --user-group --no-create-home --home-dir /tmp --shell /bin/sh repro \
    && mkdir -p /work/results && chmod 1777 /work /work/results

# Declared here, after the installs: a new commit must not invalidate their cached layers.
ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.title="repro (${VARIANT})" \
      org.opencontainers.image.source="Dockerfile" \
      org.opencontainers.image.revision="${GIT_COMMIT}"
# Any uid (docker run -u "$(id -u):$(id -g)") has a writable HOME and caches, so results in the mounted
# /work/results keep the caller's ownership.
ENV HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    REPRO_GIT_COMMIT=${GIT_COMMIT} \
    REPRO_LOCK_FILE=/opt/repro/lock.txt
# The user repro (uid 1000), by number so that runtimes (Kubernetes runAsNonRoot) can tell it is not root.
USER 1000:1000
WORKDIR /work
CMD ["repro", "--help"]

# EXTRAS=dev: the test suite too, last, so that a change to a test rebuilds no installed layer.
FROM image AS with-extras-
FROM image AS with-extras-dev
COPY tests/ /opt/repro/tests/

# DL3006: a stage of this file chosen by EXTRAS.
# hadolint ignore=DL3006
FROM with-extras-${EXTRAS}
