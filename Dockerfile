# streamwatch worker image: slim, non-root, pinned base, a healthcheck on /healthz.
#   docker build -t streamwatch:0.1.0 .
#   docker run --rm -v $PWD/deploy/streamwatch/streamwatch.yaml:/etc/streamwatch/streamwatch.yaml:ro \
#     -p 9308:9308 streamwatch:0.1.0
# Checked by tests/unit/test_deploy.py (hadolint and the rules below); there is no Docker
# engine on the CI machines, so the image itself is not built there.

# ---- build: a wheel of streamwatch and its dependencies, with no build tools left behind
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamwatch ./streamwatch
RUN python -m pip install --no-cache-dir --prefix=/install .

# ---- runtime
FROM python:3.11.11-slim-bookworm
LABEL org.opencontainers.image.title="streamwatch" \
      org.opencontainers.image.description="Production monitor for ML models on Kafka" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /install /usr/local
# A fixed numeric user, so that Kubernetes' runAsNonRoot can check it.
RUN groupadd --system --gid 10001 streamwatch \
    && useradd --system --uid 10001 --gid streamwatch --no-create-home streamwatch
USER 10001:10001
# In a container /metrics must be reachable from Prometheus: listen on every interface.
# Calibrated thresholds kept across restarts of the container (docs/detection.md); the
# Kubernetes manifest points this at an emptyDir, as its root filesystem is read-only.
ENV STREAMWATCH_EXPORTER__ADDRESS=0.0.0.0 \
    STREAMWATCH_CALIBRATION_CACHE=/tmp/streamwatch/thresholds.json \
    PYTHONUNBUFFERED=1
EXPOSE 9308
# Liveness only (/healthz): readiness (/readyz) is the orchestrator's to ask, and a broker
# outage must not make Docker restart a worker that waits for it correctly.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9308/healthz', timeout=4)"]
# streamwatch is PID 1 (exec form): SIGTERM reaches it, it finishes the batch, commits within
# worker.shutdown_grace_seconds (20 s) and exits 0. Give it 30 s (compose: stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["streamwatch"]
CMD ["run", "--config", "/etc/streamwatch/streamwatch.yaml"]
