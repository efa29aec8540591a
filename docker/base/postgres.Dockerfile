# Stand-in for postgres:16 from Debian bookworm's PostgreSQL 15, with the official image's
# interface: POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB on first start, data in the volume
# /var/lib/postgresql/data, `postgres` as the command, pg_isready on PATH.
# Built by scripts/docker/build-base-images.sh for hosts that cannot pull from Docker Hub.
ARG DEBIAN_IMAGE=movierec-base/debian:bookworm
FROM ${DEBIAN_IMAGE}

# No cluster at install time (Debian would create 15/main): the entrypoint initialises PGDATA.
# hadolint ignore=DL3008
RUN mkdir -p /etc/postgresql-common \
 && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf \
 && apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql

ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data \
    LANG=C.UTF-8

COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh

VOLUME /var/lib/postgresql/data
# Fast shutdown (SIGINT): with the default SIGTERM PostgreSQL waits for every client to leave.
STOPSIGNAL SIGINT
EXPOSE 5432
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
