# All VoiceHive images from one build: the three components ship the same distribution.
#   docker build --target operator     -t ghcr.io/voicehive/operator:dev .
#   docker build --target orchestrator -t ghcr.io/voicehive/orchestrator:dev .
#   docker build --target worker       -t ghcr.io/voicehive/worker:dev .
# Each image's ENTRYPOINT names its component; CMD holds default flags only, so a Pod's `args`
# (the chart's) replace the flags and never repeat the component.
# Every image runs as uid 10001 with no shell tools beyond the base, and takes its
# configuration from the environment (docs/operator.md, docs/orchestrator.md, docs/worker.md).

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY voicehive ./voicehive
COPY operator ./operator
COPY orchestrator ./orchestrator
COPY worker ./worker
COPY cli ./cli
RUN python -m venv /opt/venv && /opt/venv/bin/pip install . && \
    find /opt/venv -name "__pycache__" -type d -prune -exec rm -rf {} +

FROM python:3.11-slim-bookworm AS runtime
RUN useradd --uid 10001 --create-home voicehive
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1
USER 10001

# The operator (Kopf). Run two replicas with --peering for HA; Kubernetes access is the pod's
# service account. Liveness: http://0.0.0.0:8080/healthz (VOICEHIVE_OPERATOR_LIVENESS).
FROM runtime AS operator
EXPOSE 8080
ENTRYPOINT ["voicehive", "operator"]
CMD ["--all-namespaces", "--peering", "voicehive"]

# The orchestrator: the seed's webhook API, the CallManager and Redis call state. The TLS pair
# is mounted (cert-manager) and reloaded in place when it rotates. Liveness GET /healthz,
# readiness GET /readyz (503 while Redis is unreachable).
FROM runtime AS orchestrator
ENV VOICEHIVE_TLS_CERT=/tls/tls.crt \
    VOICEHIVE_TLS_KEY=/tls/tls.key
EXPOSE 8443
ENTRYPOINT ["voicehive", "orchestrator"]
CMD ["--host", "0.0.0.0", "--port", "8443"]

# The per-call worker: one call per pod, warm before the call. espeak-ng is the local voice of
# the never-dead-air fallback. Readiness GET :8081/readyz (200 once warm: VAD loaded, providers
# configured, fallback voice rendered).
FROM runtime AS worker
USER 0
# Pinned to bookworm's 1.51 release line; the glob lets Debian's security updates in.
RUN apt-get update && apt-get install -y --no-install-recommends "espeak-ng=1.51*" && rm -rf /var/lib/apt/lists/*
USER 10001
ENV LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE=0 \
    VOICEHIVE_READY_PORT=8081
EXPOSE 8081
ENTRYPOINT ["voicehive", "worker"]
