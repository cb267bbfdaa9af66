# syntax=docker/dockerfile:1.7
#
# One image recipe for every cloudpacs service, built from the repository root:
#
#   docker build --build-arg SERVICE=storage -t cloudpacs/storage:dev .
#
# Without Docker Hub or ghcr.io, `make image` (infra/image.sh) builds it with Debian's buildah
# on a base assembled by debootstrap and a uv image made from the uv wheel on PyPI, passed as
# PYTHON_IMAGE and UV_IMAGE (docs/container-image.md). Behind a TLS-inspecting proxy, hand the
# build its CA bundle as a secret — it is used by uv and never stored in a layer:
#   --secret id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt
#
# SERVICE is the folder name under services/ (storage, indexer, gateway, ...); the image runs
# the console script `pacs-${SERVICE}`. The runtime image holds only a self-contained virtual
# environment (no sources, no uv, no compilers), runs as uid 10001, writes nothing outside /tmp
# (so `readOnlyRootFilesystem: true` works with an emptyDir on /tmp), and gets its settings from
# PACS_* environment variables.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8

FROM ${UV_IMAGE} AS uv

# --- manifests: only the files that decide the dependency set -------------------------------
# Copying every pyproject.toml out of services/ in a stage of its own means the dependency layer
# below is rebuilt only when a manifest or uv.lock changes, not on every source edit.
FROM ${PYTHON_IMAGE} AS manifests
COPY services /tmp/services
RUN mkdir -p /manifests \
    && cd /tmp/services \
    && find . -mindepth 2 -maxdepth 2 -name pyproject.toml -exec cp --parents {} /manifests/ \;

# --- build: resolve and install into /app/.venv ---------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ARG SERVICE
RUN test -n "${SERVICE}" || { echo "build with --build-arg SERVICE=<name>" >&2; exit 1; }
COPY --from=uv /uv /usr/local/bin/uv
# Byte-compile at build time: the root filesystem is read-only at run time.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY --from=manifests /manifests/ services/
# Third-party dependencies only (cached layer); --frozen fails if uv.lock is stale.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=secret,id=ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then export SSL_CERT_FILE=/run/secrets/ca_bundle; fi \
    && uv sync --frozen --no-dev --package "pacs-${SERVICE}" --no-install-workspace
COPY services/ services/
# Now the workspace packages, as real wheels (--no-editable) so /src is not needed at run time.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=secret,id=ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then export SSL_CERT_FILE=/run/secrets/ca_bundle; fi \
    && uv sync --frozen --no-dev --package "pacs-${SERVICE}" --no-editable \
    && test -x "/app/.venv/bin/pacs-${SERVICE}" \
    && ln -s "/app/.venv/bin/pacs-${SERVICE}" /app/.venv/bin/pacs-service

# --- runtime ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG SERVICE
LABEL org.opencontainers.image.title="cloudpacs-${SERVICE}" \
      org.opencontainers.image.description="cloudpacs ${SERVICE} service" \
      org.opencontainers.image.source="https://github.com/cloudpacs/cloudpacs" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 pacs \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin pacs
# Owned by root and not writable by the service user: code cannot be changed at run time.
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    TMPDIR=/tmp
WORKDIR /tmp
USER 10001:10001
# Exec form: the service is PID 1 and receives SIGTERM itself (graceful shutdown).
ENTRYPOINT ["/app/.venv/bin/pacs-service"]
