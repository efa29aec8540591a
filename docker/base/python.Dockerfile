# Stand-in for python:3.11-slim, from Debian bookworm's packages (its python3 is 3.11).
# Built by scripts/docker/build-base-images.sh for hosts that cannot pull from Docker Hub.
ARG DEBIAN_IMAGE=movierec-base/debian:bookworm
FROM ${DEBIAN_IMAGE}

# python-is-python3: `python` on PATH, as in the official image. python3-venv: `python -m venv`
# with pip. libgomp1: numba's OpenMP layer for the trainer, preinstalled so the movierec build
# needs no package mirror. ca-certificates: Debian's public CAs, as in the official image.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python-is-python3 libgomp1 ca-certificates \
 && rm -rf /var/lib/apt/lists/*

ENV LANG=C.UTF-8
CMD ["python3"]
