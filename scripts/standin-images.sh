#!/usr/bin/env bash
# Base images for a Docker engine that cannot reach a public registry.
#
# For each image the Dockerfile and docker-compose.yml name (default: python:3.11-slim-bookworm,
# redis:7.2-alpine, postgres:16-alpine; or the names given as arguments): keep it if the engine
# has it, else pull it, else build a STAND-IN from Debian bookworm packages (debootstrap from the
# apt mirror this machine is configured with, or $DEBIAN_MIRROR) and tag it with the same name.
# A stand-in behaves like the official image for what this repository uses: `python` on PATH
# with venv; redis-server with /data, protected mode off, `redis-cli`; postgres initialised from
# POSTGRES_USER/POSTGRES_PASSWORD/POSTGRES_DB into PGDATA, `pg_isready`. Stand-ins carry the label
# `loan-default.standin`, and the script prints which images are stand-ins.
#
# Needs root only when a stand-in must be built (debootstrap). Bank mirrors: pass the internal
# image names to `docker compose build` as BASE_IMAGE / PYTHON_IMAGE instead (see README).
set -euo pipefail

IMAGES=("$@")
[ ${#IMAGES[@]} -gt 0 ] || IMAGES=(python:3.11-slim-bookworm redis:7.2-alpine postgres:16-alpine)
ROOTFS_IMAGE="loan-default-standin/bookworm-minbase:latest"
LABEL="loan-default.standin"

mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local uri
  uri=$(grep -hE '^URIs: .*/debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 | awk '{print $2}' || true)
  [ -n "$uri" ] || uri=$(grep -hE '^deb [^ ]+/debian/? bookworm' /etc/apt/sources.list 2>/dev/null | head -n1 | awk '{print $2}' || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

have() { docker image inspect "$1" >/dev/null 2>&1; }
is_standin() { [ "$(docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null)" != "" ]; }

build_rootfs() {
  have "$ROOTFS_IMAGE" && return
  [ "$(id -u)" -eq 0 ] || { echo "standin: building $ROOTFS_IMAGE needs root (debootstrap)" >&2; exit 1; }
  command -v debootstrap >/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null 2>&1 \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  }
  local dir m
  dir=$(mktemp -d /tmp/standin-rootfs.XXXXXX)
  m=$(mirror)
  echo "standin: debootstrap bookworm (minbase) from $m"
  debootstrap --variant=minbase --include=ca-certificates,passwd bookworm "$dir" "$m" >"$dir.log" 2>&1 \
    || { tail -n 30 "$dir.log" >&2; rm -rf "$dir" "$dir.log"; exit 1; }
  # Same trimming as the official slim images: no docs, man pages, apt lists or caches.
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/usr/share/doc/* \
    "$dir"/usr/share/man/* "$dir"/usr/share/info/* "$dir"/var/log/*.log
  printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\n' \
    >"$dir/etc/dpkg/dpkg.cfg.d/01-slim"
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$dir/etc/apt/apt.conf.d/01-slim"
  tar -C "$dir" -c . | docker import --change "LABEL $LABEL=debootstrap" \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' - "$ROOTFS_IMAGE" >/dev/null
  rm -rf "$dir" "$dir.log"
}

dockerfile_for() {
  case "$1" in
    python:3.11*)
      cat <<'EOF'
RUN apt-get update && apt-get install -y python3 python3-venv && rm -rf /var/lib/apt/lists/* \
 && ln -s /usr/bin/python3 /usr/local/bin/python && ln -s /usr/bin/python3 /usr/local/bin/python3
ENV PYTHON_VERSION=3.11
CMD ["python3"]
EOF
      ;;
    redis:*)
      cat <<'EOF'
RUN apt-get update && apt-get install -y redis-server && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data \
 && printf '%s\n' '#!/bin/sh' 'set -e' \
   '# Like the official entrypoint: own /data, drop to the redis user; protected mode off by default.' \
   'if [ "$1" = redis-server ]; then shift' \
   '  if [ -n "$1" ] && [ "${1#-}" = "$1" ]; then conf=$1; shift; set -- redis-server "$conf" --protected-mode no "$@"' \
   '  else set -- redis-server --protected-mode no "$@"; fi' \
   '  if [ "$(id -u)" = 0 ]; then find . \! -user redis -exec chown redis "{}" +; exec setpriv --reuid=redis --regid=redis --init-groups "$@"; fi' \
   'fi' 'exec "$@"' >/usr/local/bin/docker-entrypoint.sh \
 && chmod 755 /usr/local/bin/docker-entrypoint.sh
WORKDIR /data
VOLUME /data
EXPOSE 6379
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
EOF
      ;;
    postgres:*)
      cat <<'EOF'
RUN mkdir -p /etc/postgresql-common/createcluster.d \
 && echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/00-no-main.conf \
 && apt-get update && apt-get install -y postgresql-15 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \
 && printf '%s\n' '#!/bin/bash' 'set -euo pipefail' \
   '# The parts of the official entrypoint this repository uses: POSTGRES_USER/PASSWORD/DB, PGDATA.' \
   'if [ "${1:-}" = postgres ]; then' \
   '  : "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"' \
   '  [ -n "${POSTGRES_PASSWORD:-}" ] || { echo "POSTGRES_PASSWORD is not set" >&2; exit 1; }' \
   '  mkdir -p "$PGDATA" && chown postgres:postgres "$PGDATA" && chmod 700 "$PGDATA"' \
   '  as() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }' \
   '  if [ ! -s "$PGDATA/PG_VERSION" ]; then' \
   '    pw=$(mktemp); chown postgres "$pw"; printf "%s" "$POSTGRES_PASSWORD" >"$pw"' \
   '    as initdb -D "$PGDATA" --username="$POSTGRES_USER" --pwfile="$pw" --auth-local=trust --auth-host=scram-sha-256 >/dev/null; rm -f "$pw"' \
   '    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"' \
   '    as pg_ctl -D "$PGDATA" -o "-c listen_addresses=" -w start >/dev/null' \
   '    if [ "$POSTGRES_DB" != postgres ]; then as psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -qc "CREATE DATABASE \"$POSTGRES_DB\""; fi' \
   '    as pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null' \
   '  fi' \
   '  exec setpriv --reuid=postgres --regid=postgres --init-groups "$@" -c listen_addresses="*"' \
   'fi' 'exec "$@"' >/usr/local/bin/docker-entrypoint.sh \
 && chmod 755 /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
VOLUME /var/lib/postgresql/data
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
EOF
      ;;
    *) return 1 ;;
  esac
}

standins=()
for image in "${IMAGES[@]}"; do
  if have "$image"; then
    is_standin "$image" && standins+=("$image ($(docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$image"))")
    continue
  fi
  if timeout 60 docker pull -q "$image" >/dev/null 2>&1; then echo "standin: pulled $image"; continue; fi
  body=$(dockerfile_for "$image") || { echo "standin: no recipe for $image and it cannot be pulled" >&2; exit 1; }
  build_rootfs
  what="Debian bookworm packages"
  case "$image" in postgres:*) what="Debian bookworm postgresql-15" ;; redis:*) what="Debian bookworm redis-server 7.0" ;;
    python:*) what="Debian bookworm python3 3.11" ;; esac
  echo "standin: building $image from $what"
  printf 'FROM %s\nLABEL %s="%s"\n%s\n' "$ROOTFS_IMAGE" "$LABEL" "$what" "$body" \
    | docker build -q -t "$image" - >/dev/null
  standins+=("$image ($what)")
done
if [ ${#standins[@]} -gt 0 ]; then
  printf 'standin: STAND-IN images (not the official ones): %s\n' "$(IFS=';'; echo "${standins[*]}")"
else
  echo "standin: no stand-ins; all base images are the real ones"
fi
