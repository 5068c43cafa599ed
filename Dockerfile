# syntax=docker/dockerfile:1
# Two images from one file: `--target operator` (kopf operator + control plane, no torch) and
# `--target runtime` (GPU inference pod). Both run as a non-root user.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin adaspec
WORKDIR /opt/adaspec
COPY pyproject.toml README.md ./
COPY common/ common/
COPY devtools/ devtools/
COPY operator/ operator/
COPY runtime/ runtime/

FROM base AS operator
RUN pip install ".[operator]"
USER 10001
ENTRYPOINT ["adaspec"]
CMD ["operator"]

FROM base AS runtime
RUN pip install ".[runtime]"
USER 10001
ENTRYPOINT ["adaspec"]
CMD ["--help"]
