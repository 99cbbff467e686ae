# The aggregator daemon in a container. Build and run:
#   docker build -t aggregator .
#   docker run -d --name aggregator -p 8080:8080 \
#     -v "$PWD/feeds.yaml:/app/feeds.yaml:ro" -v "$PWD/data:/app/data" aggregator
# The config's relative paths (data/aggregator.db, data/public) resolve inside /app, so the
# database and the rendered site land in the mounted data/ folder. `docker kill -s HUP aggregator`
# re-reads feeds.yaml; `docker stop` sends SIGTERM and the daemon exits cleanly.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY aggregator ./aggregator
COPY templates ./templates
RUN pip install --no-cache-dir . \
    && useradd --system --home /app aggregator \
    && mkdir -p /app/data && chown aggregator /app/data
COPY feeds.yaml ./feeds.yaml
USER aggregator
VOLUME ["/app/data"]
EXPOSE 8080
STOPSIGNAL SIGTERM
CMD ["aggregator", "--config", "/app/feeds.yaml", "run", "--host", "0.0.0.0", "--port", "8080"]
