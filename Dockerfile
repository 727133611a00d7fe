FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /srv/image-gateway

COPY requirements-runtime.lock pyproject.toml README.md ./
RUN pip install --no-cache-dir -r requirements-runtime.lock
COPY app ./app
COPY migrations ./migrations
COPY config ./config
RUN pip install --no-cache-dir --no-deps . && useradd --system --uid 10001 gateway \
    && mkdir -p /srv/image-gateway/data && chown gateway /srv/image-gateway/data
USER gateway

EXPOSE 8000
CMD ["image-gateway", "serve", "--host", "0.0.0.0", "--port", "8000"]
