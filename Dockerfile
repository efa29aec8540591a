# Two images from one file, both running as a non-root user with the configuration in MOVIEREC_*
# environment variables at run time (no secrets, no CA files baked in):
#
#   api      (the default target) movierec without the `train` extra: the API, migrations, the
#            data import and the model-store commands; default command `movierec serve`.
#   trainer  the same plus the `train` extra (CPU-only torch, numba, matplotlib); default command
#            `movierec train`. docker-compose.yml's trainer services use it.
#
#   docker build -t movierec:local .                              # the API image
#   docker build --target trainer -t movierec-trainer:local .     # the trainer image
#   docker run --rm -p 8000:8000 movierec:local
#
# Base images: PYTHON_IMAGE (default python:3.11-slim). Where Docker Hub is out of reach,
# scripts/docker/build-base-images.sh builds a stand-in from Debian's packages.
#
# Packages: from PyPI (torch from TORCH_INDEX_URL, PyTorch's CPU index, so pip never resolves the
# CUDA build), or, when docker/wheelhouse/ holds wheels (scripts/docker/wheelhouse.sh), from there
# alone with no network at all.
#
# No `# syntax=` line: the Dockerfile frontend built into the engine (classic builder or BuildKit)
# is enough, and fetching another one from Docker Hub would fail offline.

ARG PYTHON_IMAGE=python:3.11-slim

# --- requirements: pyproject.toml -> the requirement lists; later stages copy the lists, so an
#     edit elsewhere in pyproject.toml (a tool's settings) rebuilds no virtual environment ---
FROM ${PYTHON_IMAGE} AS requirements

WORKDIR /src
COPY pyproject.toml ./
# The core's and the API's, and the `train` extra's without torch (installed first, on its own).
RUN mkdir /requirements && python -c "import re, tomllib; \
p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
open('/requirements/api.txt', 'w').write('\n'.join(p['dependencies']) + '\n'); \
train = [r for r in p['optional-dependencies']['train'] if not re.match(r'torch\s*==', r)]; \
open('/requirements/train.txt', 'w').write('\n'.join(train) + '\n')"

# --- build: what both virtual environments start from: pip settings and the wheelhouse ---
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# docker/wheelhouse/ holds only its README unless scripts/docker/wheelhouse.sh filled it. With
# wheels in it, a pip.conf of this build stage (never of an image that ships) makes every pip call
# below, the wheel's isolated build included, install from it alone.
COPY docker/wheelhouse/ /wheelhouse/
RUN set -- /wheelhouse/*.whl; \
    if [ -e "$1" ]; then \
        printf '[global]\nno-index = true\nfind-links = /wheelhouse\n' > /etc/pip.conf; \
        echo "installing from the wheelhouse ($# wheels), no index"; \
    fi

# --- venv-api: /opt/venv with the core's and the API's dependencies ---
FROM build AS venv-api

COPY --from=requirements /requirements/ /requirements/
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --requirement /requirements/api.txt

# MovieLens 100K for containers without internet: recbole's wheel, when the wheelhouse has it,
# is what `movierec data fetch ml-100k` reads with MOVIEREC_PYPI_INDEX_URL=file:///opt/movierec/wheelhouse.
RUN mkdir -p /opt/movierec/wheelhouse \
 && { cp /wheelhouse/recbole-*.whl /opt/movierec/wheelhouse/ 2>/dev/null || true; }

# --- wheel: the movierec wheel, built from exactly what pyproject.toml packages ---
FROM build AS wheel

COPY pyproject.toml README.md ./
COPY movierec/ movierec/
COPY app/ app/
COPY trainer/ trainer/
COPY migrations/ migrations/
COPY cli/ cli/
RUN python -m venv /tmp/venv \
 && /tmp/venv/bin/pip wheel --no-deps --wheel-dir /wheels .

# --- venv-train: the same plus the `train` extra, CPU-only torch first ---
FROM build AS venv-train

# Must match the torch pin in pyproject.toml (tests/deploy checks that they agree).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# 1. CPU-only torch, alone in its layer: the biggest download, rebuilt only when TORCH_VERSION changes.
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
 && /opt/venv/bin/python -c "import sys, torch; sys.exit(f'CUDA torch {torch.__version__} in a CPU image' if torch.version.cuda else 0)"

# What the wheel ships for building C++ extensions and testing torch itself, which training never
# runs: C++ headers (torch/include), C++ test binaries (torch/test, torch/bin/test_* and *Test) and
# protoc. 190 MB of a 1.5 GB image.
RUN torch="$(/opt/venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')" \
 && rm -rf "$torch/include" "$torch/test" "$torch"/bin/protoc* "$torch"/bin/test_* "$torch"/bin/*Test \
 && /opt/venv/bin/python -c "import torch; torch.ones(2) @ torch.ones(2)"

# 2. The other dependencies; torch is installed and satisfies its pin, so pip leaves it alone.
COPY --from=requirements /requirements/ /requirements/
RUN /opt/venv/bin/pip install --requirement /requirements/api.txt --requirement /requirements/train.txt

RUN /opt/venv/bin/pip check \
 && /opt/venv/bin/python -c "import sys, torch; sys.exit(f'CUDA torch {torch.__version__} in a CPU image' if torch.version.cuda else 0)"

# --- runtime: what both images share: a non-root user and its directories ---
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="movierec" \
      org.opencontainers.image.licenses="MIT"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MOVIEREC_MODEL_STORE=/var/lib/movierec/models \
    MOVIEREC_DATA_DIR=/var/lib/movierec/data

# The model store and data directories exist in the image owned by the runtime user, so a fresh
# named volume mounted there starts with that ownership (Docker copies it into the new volume).
RUN groupadd --system --gid 10001 movierec \
 && useradd --system --uid 10001 --gid movierec --home-dir /var/lib/movierec --no-create-home \
        --shell /usr/sbin/nologin movierec \
 && mkdir -p /var/lib/movierec/models /var/lib/movierec/data \
 && chown -R movierec:movierec /var/lib/movierec

WORKDIR /var/lib/movierec

# --- trainer: `movierec train` (CPU torch, numba's kernels) ---
FROM runtime AS trainer

LABEL org.opencontainers.image.description="movierec trainer: movierec with the train extra (CPU torch)"

# NUMBA_CACHE_DIR: the trainer's compiled kernels are cached where the runtime user can write
# (the venv is root's), so only a container's first training compiles them.
ENV NUMBA_CACHE_DIR=/var/lib/movierec/.cache/numba

# libgomp1: numba's OpenMP threading layer, which the trainer's kernels run on; without it numba
# falls back to its own thread pool, measured 40 % slower at 2 threads (5M ratings: 1.58M against
# 2.61M ratings/s). Installed only when the base image lacks it (the stand-in base has it, so an
# offline build needs no package mirror). Not pinned: the base image's Debian release fixes it.
# hadolint ignore=DL3008
RUN if [ "$(dpkg-query --show --showformat='${db:Status-Status}' libgomp1 2>/dev/null)" != installed ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends libgomp1 \
        && rm -rf /var/lib/apt/lists/*; \
    fi

COPY --from=venv-train /opt/venv /opt/venv
# movierec itself goes in last, in a layer of its own: a code change rebuilds a few hundred kB, not
# the 1.2 GB environment; `pip check` fails the build if anything is missing or mismatched.
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-deps --no-cache-dir --disable-pip-version-check --root-user-action=ignore /tmp/wheels/movierec-*.whl \
 && rm -rf /tmp/wheels \
 && pip check \
 && movierec train --help > /dev/null

USER 10001:10001
CMD ["movierec", "train"]

# --- api (the default target): `movierec serve`, no training packages ---
FROM runtime AS api

LABEL org.opencontainers.image.description="movierec: the FastAPI service and the data and model commands"

COPY --from=venv-api /opt/venv /opt/venv
COPY --from=venv-api /opt/movierec/wheelhouse /opt/movierec/wheelhouse
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-deps --no-cache-dir --disable-pip-version-check --root-user-action=ignore /tmp/wheels/movierec-*.whl \
 && rm -rf /tmp/wheels \
 && pip check \
 && movierec --help > /dev/null \
 && python -c "import importlib.util as u, sys; sys.exit('torch in the API image' if u.find_spec('torch') else 0)"

USER 10001:10001
EXPOSE 8000

# /health answers 200 while the process is alive (readiness is /ready). No curl in the slim image:
# Python's urllib does the request, and any error (refused, timeout, non-2xx) exits non-zero.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]

CMD ["movierec", "serve", "--host", "0.0.0.0", "--port", "8000"]
