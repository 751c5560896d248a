# The logqueue image: the `logqueue` node/CLI and the experiments runner (one image, two uses).
#   docker build -t logqueue .
#   docker run -v "$PWD/secret:/secret:ro" logqueue \
#     logqueue node --id 1 --listen 0.0.0.0:7001 --peers ... --data-dir /data --secret-file /secret
#   (a node refuses a non-loopback --listen without --secret-file unless given --insecure)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
# Only what the package needs: never the host's .venv, results or caches.
COPY pyproject.toml README.md ./
COPY logqueue ./logqueue
COPY baselines ./baselines
COPY experiments ./experiments
RUN pip install --quiet '.[brokers,experiments,fast]'

# Raft state (WAL, hard state, snapshots) lives here; mount a volume to keep it across restarts.
VOLUME ["/data"]
EXPOSE 7001
CMD ["logqueue", "--help"]
