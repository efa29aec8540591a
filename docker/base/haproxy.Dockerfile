# Stand-in for haproxy:2.8 from Debian bookworm's haproxy package (2.6), laid out like the official
# image: configuration in /usr/local/etc/haproxy/haproxy.cfg, runs as user haproxy.
# Built by scripts/docker/build-base-images.sh for hosts that cannot pull from Docker Hub.
ARG DEBIAN_IMAGE=movierec-base/debian:bookworm
FROM ${DEBIAN_IMAGE}

# Not pinned: the Debian release (bookworm and its updates) fixes the versions.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends haproxy \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /usr/local/etc/haproxy /var/lib/haproxy \
 && chown haproxy:haproxy /var/lib/haproxy

# HAProxy's graceful stop (the official image's STOPSIGNAL).
STOPSIGNAL SIGUSR1
# By name: its id differs between the official image (99) and Debian's package.
# hadolint ignore=DL3066
USER haproxy
WORKDIR /var/lib/haproxy
CMD ["haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
