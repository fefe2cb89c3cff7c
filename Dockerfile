# One image, both entry points: `uptime-collector` (the default) and `uptime-agent`.
# Linted by hadolint in tests/test_container_files.py.

# --- build: the package and its dependencies into a virtual environment ------------------------
FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent ./agent
COPY collector ./collector
COPY migrations ./migrations
COPY protocol ./protocol
COPY evidence ./evidence
# Every dependency ships a wheel for this platform: no compiler in the image. The bytecode pip
# compiles stays (the running user cannot write it, and it spares every start the compiling).
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir .

# --- run: the same slim base, the virtual environment, the example configs, a non-root user ----
FROM python:3.11-slim-bookworm

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN groupadd --system --gid 10001 uptime \
    && useradd --system --uid 10001 --gid uptime --home-dir /app --no-create-home --shell /usr/sbin/nologin uptime \
    && mkdir -p /app/data \
    && chown uptime:uptime /app/data

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY config/docker ./config/docker

# No capability at all, not even CAP_NET_RAW (which a non-root user would not hold anyway): the
# agent pings through the kernel's unprivileged ICMP sockets, which this user's group may open when
# net.ipv4.ping_group_range includes it (docker-compose.yml sets it for the agents and drops every
# capability). The agent falls back to them by itself when raw sockets are refused.
USER 10001:10001
VOLUME ["/app/data"]
EXPOSE 8080 9101

# /healthz of the collector (8080, 200 when its database answers) or of an agent's metrics server
# (docker-compose.yml sets HEALTH_PORT=9101 for the agents).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os,sys,urllib.request; port=os.environ.get('HEALTH_PORT','8080'); sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:'+port+'/healthz', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["uptime-collector"]
CMD ["serve", "--config", "/app/config/docker/collector.yml"]
