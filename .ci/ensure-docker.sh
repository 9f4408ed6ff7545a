#!/usr/bin/env bash
# Make sure a Docker engine answers (`docker info`): reuse one that is there, else start the
# installed dockerd, else install Debian's docker.io and start it (root only), in the background,
# logging to var/docker/dockerd.log. Like ensure-redis.sh for Redis. Without root and without an
# engine it says so and exits 0: the container tests then skip, loudly.
set -euo pipefail
cd "$(dirname "$0")/.."

answers() { docker info >/dev/null 2>&1; }

if ! command -v docker >/dev/null 2>&1 && [ "$(id -u)" -ne 0 ]; then
  echo "docker: no docker CLI and not root; the container tests will be SKIPPED" >&2; exit 0
fi
if command -v docker >/dev/null 2>&1 && answers; then
  echo "docker: engine answering ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"; exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "docker: no engine answers and not root to start one; the container tests will be SKIPPED" >&2
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "docker: dockerd not installed; installing docker.io from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq docker.io >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq docker.io >/dev/null; }
fi
mkdir -p var/docker
LOG="$PWD/var/docker/dockerd.log"
echo "docker: starting dockerd (log: $LOG)"
nohup dockerd >"$LOG" 2>&1 &
for _ in $(seq 1 120); do
  if answers; then echo "docker: engine answering ($(docker version --format '{{.Server.Version}}'))"; exit 0; fi
  sleep 0.5
done
echo "docker: dockerd did not answer within 60 s; last log lines:" >&2
tail -n 20 "$LOG" >&2
exit 1
