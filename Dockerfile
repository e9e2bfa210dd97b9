# syntax=docker/dockerfile:1
#
# audioproc: the FastAPI audio preprocessing service.
#
# CPU image (the default):
#   docker build -t audioproc .
#
# CUDA image: pass a CUDA runtime base that provides Python >= 3.11 with the venv module (for
# example an nvidia/cuda:12.x-cudnn-runtime-ubuntu22.04 image with python3.11 + python3.11-venv
# installed; Ubuntu 22.04's own python3 is 3.10, too old), the interpreter's name, and a
# PyTorch wheel index matching that CUDA version (download.pytorch.org/whl/cuXXX):
#   docker build -t audioproc:cuda \
#     --build-arg BASE_IMAGE=my-registry/cuda12-cudnn-runtime-py311:latest \
#     --build-arg PYTHON=python3.11 \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
#   docker run --gpus all -p 8000:8000 audioproc:cuda
#
# No system packages are installed: the soundfile manylinux wheel bundles libsndfile
# (_soundfile_data/libsndfile_*.so, since soundfile 0.12) and the av (PyAV) wheel bundles the
# FFmpeg libraries (av.libs/), so neither libsndfile1 nor ffmpeg is needed from apt.

ARG BASE_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS builder

# The interpreter that creates the virtual environment (python3 in python:3.11-slim).
ARG PYTHON=python3
# Where torch/torchaudio come from: the CPU-only wheels by default (no CUDA libraries, a
# fraction of the size); for a CUDA build, a CUDA index (https://download.pytorch.org/whl/cuXXX).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN ${PYTHON} -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch first, from TORCH_INDEX_URL, in its own layer (the largest one; it survives source
# changes). The project pins torch==2.11.0, which a local version such as 2.11.0+cpu
# satisfies, so the `pip install .` below keeps these wheels instead of fetching PyPI's.
RUN pip install --no-cache-dir --upgrade pip \
 && pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" \
        torch==2.11.0 torchaudio==2.11.0

WORKDIR /src
COPY . .
# Smoke check, from outside /src so that the installed package is the one imported: the
# service and its native dependencies (torch, the bundled libsndfile and FFmpeg) load.
RUN pip install --no-cache-dir . \
 && cd / && python -c "import app.main, app.cli, soundfile, av, torchaudio"

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime

# glibc returns large buffers to the OS after every request by default; keeping them cuts the
# page faults on the multi-MB tensors each request allocates (median 48.7 → 42.0 ms per minute
# of audio in scripts/bench_pipeline.py), at the price of a larger resident set.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STORAGE_DIR=/data/results \
    MALLOC_MMAP_THRESHOLD_=1073741824 \
    MALLOC_TRIM_THRESHOLD_=4294967296

# A system user without a login shell or home-directory clutter; it owns /data (the results
# volume) and nothing else.
RUN groupadd --system --gid 10001 audioproc \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin audioproc \
 && mkdir -p /data/results \
 && chown -R 10001:10001 /data

# The virtual environment refers to the base image's interpreter by path, which is the same in
# both stages because both start from BASE_IMAGE.
COPY --from=builder /opt/venv /opt/venv

WORKDIR /data
VOLUME ["/data"]

USER 10001:10001

EXPOSE 8000

# Liveness only (/healthz); orchestrators should gate traffic on /readyz (503 when degraded).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]

CMD ["audioproc", "serve", "--host", "0.0.0.0", "--port", "8000"]
