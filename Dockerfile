# syntax=docker/dockerfile:1
# Two targets from one file:
#   docker build --target api    -t diffusion-jobs-api .     # FastAPI server, no torch (small)
#   docker build --target worker -t diffusion-jobs-worker .  # RQ worker with CUDA-enabled torch
# docker-compose.yml builds both.

ARG PYTHON_VERSION=3.11

# ---- base: Python, a non-root user and its writable directories ---------------------------------
FROM python:${PYTHON_VERSION}-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VAR_DIR=/home/app/var \
    DATA_DIR=/home/app/var/data \
    MODELS_DIR=/home/app/var/models \
    HF_HOME=/home/app/.cache/huggingface
# The directories exist (owned by app) before any volume is mounted on them, so Docker gives a new
# named volume the same ownership and the non-root user can write to it.
RUN useradd --create-home --home-dir /home/app --uid 1000 --user-group app \
 && mkdir -p /home/app/var/data /home/app/var/models /home/app/.cache/huggingface \
 && chown -R app:app /home/app
WORKDIR /home/app

# ---- api: the HTTP server; installs the web dependencies, then the package without its deps -----
FROM base AS api
RUN pip install \
        "fastapi>=0.165" "uvicorn[standard]>=0.30" "redis>=5.0" "rq>=3.0,<3.1" \
        "pydantic>=2.7" "pydantic-settings>=2.3" "pillow>=10.3" "python-multipart>=0.0.9" \
        "httpx>=0.27" "numpy>=1.26" "limits>=5.0" "huggingface_hub>=0.34" \
        "prometheus-client>=0.20" "python-json-logger>=3.1" "fastapi-offline>=1.7" "sse-starlette>=3.0" \
        "httpx-sse>=0.4" "tqdm>=4.66" \
        "opentelemetry-api>=1.30" "opentelemetry-sdk>=1.30" "opentelemetry-exporter-otlp-proto-http>=1.30"
COPY . /src
RUN pip install --no-deps /src && rm -rf /src
USER app
# Listen on all interfaces inside the container; the server then requires API_KEYS to start.
ENV HOST=0.0.0.0 PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]
CMD ["diffusion-jobs", "api"]

# ---- worker: torch first (its own cached layer), then the package with all its dependencies ------
FROM base AS worker
# The Linux x86_64 torch wheel on PyPI is a CUDA build; pin it with e.g.
#   docker compose build --build-arg TORCH_PACKAGE=torch==2.5.1 worker
ARG TORCH_PACKAGE=torch
RUN pip install "${TORCH_PACKAGE}"
COPY . /src
RUN pip install /src && rm -rf /src
USER app
CMD ["diffusion-jobs", "worker", "--queue", "mnist"]
