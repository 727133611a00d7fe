# image-gateway container image: two stages.
#
#   build    a virtualenv in /opt/venv from requirements-runtime.lock (what serving needs, no
#            test or lint tools) plus the gateway itself; pip may use a CA bundle given as the
#            build secret `pip_cert` (a TLS-intercepting proxy), which never reaches a layer
#   runtime  the same base, the venv copied over, a non-root user, nothing else
#
#   docker build -t image-gateway .
#   docker run -p 8000:8000 -e DATABASE_URL=postgresql://user:pass@db/gateway \
#       -e GATEWAY_ADMIN_TOKEN=... -v ./models.yaml:/srv/image-gateway/config/models.yaml:ro \
#       image-gateway
#
# Start-up = `image-gateway serve`: every check (settings, catalog, database, Redis), then the
# migrations (under a Postgres advisory lock, so N replicas starting together migrate once),
# then the server. The catalog is /srv/image-gateway/config/models.yaml (GATEWAY_CONFIG):
# mount your own over it; SIGHUP (`docker kill -s HUP`) reloads it in place.
#
# BASE_IMAGE must provide python3 (3.11+) with the venv module; the default is the official slim
# image. No `# syntax=` line: the builder's built-in Dockerfile frontend is enough, so a build
# needs no image besides the base.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python3 -m venv /opt/venv
COPY requirements-runtime.lock ./
# the CA bundle is mounted for these commands only (absent when no secret is given)
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && /opt/venv/bin/pip install -r requirements-runtime.lock
COPY pyproject.toml README.md ./
COPY app ./app
COPY migrations ./migrations
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && /opt/venv/bin/pip install --no-deps . \
    && cd / && /opt/venv/bin/python -c "import app.main, migrations, pathlib; \
assert list((pathlib.Path(migrations.__file__).parent / 'versions').glob('0001_*.py'))" \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GATEWAY_HOME=/srv/image-gateway \
    GATEWAY_CONFIG=/srv/image-gateway/config/models.yaml \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8000
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid 10001 --home-dir /srv/image-gateway --no-create-home \
        gateway \
    && mkdir -p /srv/image-gateway/config /srv/image-gateway/data \
    && chown gateway:gateway /srv/image-gateway/data
COPY --from=build /opt/venv /opt/venv
COPY config/models.yaml /srv/image-gateway/config/models.yaml
WORKDIR /srv/image-gateway
USER gateway:gateway
# only used by the embedded SQLite default; production sets DATABASE_URL to Postgres
VOLUME ["/srv/image-gateway/data"]
EXPOSE 8000
# ready = database answers, migrations at head, catalog loaded (503 with the reason otherwise)
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('GATEWAY_PORT', '8000'), timeout=4)"]
STOPSIGNAL SIGTERM
CMD ["image-gateway", "serve"]
