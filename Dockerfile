# One image, both entry points: `uptime-collector` and `uptime-agent`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY agent ./agent
COPY collector ./collector
COPY migrations ./migrations
COPY config ./config
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /app uptime \
    && mkdir -p /app/data \
    && chown uptime /app/data

# Unprivileged ICMP sockets: the agent needs no root and no CAP_NET_RAW when the kernel lets its
# group open ping sockets (docker-compose.yml sets net.ipv4.ping_group_range for the agents).
USER uptime
VOLUME ["/app/data"]
EXPOSE 8080 9101

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os,sys,urllib.request; port=os.environ.get('HEALTH_PORT','8080'); sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:'+port+'/healthz', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["uptime-collector"]
CMD ["serve", "--config", "/app/config/docker/collector.yml"]
