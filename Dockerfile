# syntax=docker/dockerfile:1
# One image for the API (`loan-default serve`), the batch worker (`loan-default worker`), training
# (`python training/train.py`) and the MLflow server; the command differs. Stages:
#   builder  venv with the pinned requirements + the package, and the derived data set
#   base     python:3.11-slim + that venv + the data; no compilers, no pip cache, no build tools
#   test     base + tests/ (docker compose --profile test run --rm tests)
#   runtime  base as uid 1000 with a HEALTHCHECK (the default target)

FROM python:3.11-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
WORKDIR /src
RUN python -m venv /opt/venv
# Dependencies first: this layer is rebuilt only when requirements.txt changes. Every pin has a
# manylinux wheel for CPython 3.11, so no compiler is needed even here.
COPY requirements.txt ./
RUN pip install --only-binary=:all: -r requirements.txt
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-deps . \
    && python -m compileall -q /opt/venv/lib/python3.11/site-packages/loan_default
# The data set is derived at build time from the ISLP wheel on PyPI (checksummed, fails loudly on a
# mismatch). Mount another file at /app/training/Default_Fin.csv, or pass --data, to train on other data.
RUN loan-default data --output /opt/data/Default_Fin.csv --cache-dir /tmp/islp \
    && rm -rf /tmp/islp

FROM python:3.11-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    MPLBACKEND=Agg \
    HOST=0.0.0.0 \
    PORT=8005 \
    DATA_PATH=/app/training/Default_Fin.csv \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus
RUN groupadd --gid 1000 app \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin app
WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/data/Default_Fin.csv training/Default_Fin.csv
COPY training/train.py training/train.py
# Writable state for the non-root user: embedded MLflow store, Celery's embedded broker, reports.
RUN mkdir -p mlflow var reports \
    && chown 1000:1000 mlflow var reports

FROM base AS test
COPY --chown=1000:1000 pyproject.toml pytest.ini ./
COPY --chown=1000:1000 tests ./tests
RUN chown 1000:1000 /app
USER 1000:1000
CMD ["pytest", "-m", "not slow", "--ignore=tests/deploy"]

FROM base AS runtime
USER 1000:1000
EXPOSE 8005
# No curl in slim images: the check is a few lines of the interpreter that is already there.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os,sys,urllib.request as u; sys.exit(0 if u.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT','8005')}/healthz\", timeout=2).status == 200 else 1)"]
CMD ["loan-default", "serve", "--host", "0.0.0.0", "--port", "8005", "--workers", "2"]
