#!/usr/bin/env bash
# Make sure a Redis server answers on REDIS_PORT (default 6379): reuse one that is there, else
# start the installed redis-server, else install it from Debian's packages and start it.
set -euo pipefail
PORT="${REDIS_PORT:-6379}"

ping() {
  python3 - "$PORT" <<'PY'
import socket, sys
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
    s.sendall(b"PING\r\n")
    ok = s.recv(16).startswith(b"+PONG")
except OSError:
    ok = False
sys.exit(0 if ok else 1)
PY
}

if ping; then echo "redis: answering on $PORT"; exit 0; fi
if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis: not installed; installing redis-server from Debian"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
mkdir -p var/redis
redis-server --daemonize yes --bind 127.0.0.1 --port "$PORT" --save "" --appendonly no \
  --dir "$PWD/var/redis" --logfile "$PWD/var/redis/redis.log"
for _ in $(seq 1 50); do ping && { echo "redis: started on $PORT"; exit 0; }; sleep 0.1; done
echo "redis: failed to start on $PORT" >&2; exit 1
