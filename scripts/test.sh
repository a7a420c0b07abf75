#!/usr/bin/env bash
# Runs the whole test suite: sets up .venv, installs PostgreSQL and Redis when missing
# (Debian/Ubuntu, as root), starts throwaway servers on free local ports, runs pytest,
# and stops what it started. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

make -s venv

need_apt=()
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ] || need_apt+=(postgresql)
command -v redis-server >/dev/null || need_apt+=(redis-server)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "error: the tests need ${need_apt[*]}; install them (e.g. apt-get install ${need_apt[*]})" >&2
    exit 2
  fi
  echo "installing ${need_apt[*]} ..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi

free_port() { .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ -f "$work/pg/postmaster.pid" ]; then
    pgpid=$(head -n 1 "$work/pg/postmaster.pid"); kill "$pgpid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pgpid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# PostgreSQL: a throwaway cluster, trust auth on 127.0.0.1 only.
pg_port=$(free_port)
run_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
mkdir -p "$work/pg" "$work/sock"
[ "$(id -u)" = 0 ] && chown -R postgres "$work"
chmod 755 "$work"
run_pg "$pg_bin/initdb" -D "$work/pg" -A trust -U postgres -E UTF8 >/dev/null
run_pg "$pg_bin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w -t 60 \
  -o "-p $pg_port -k $work/sock -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
run_pg "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres creditgate_test
export CREDITGATE_TEST_PG_URL="postgresql://postgres@127.0.0.1:$pg_port/creditgate_test"

# Redis: no persistence.
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  >"$work/redis.log" 2>&1 &
pids+=($!)
export CREDITGATE_TEST_REDIS_URL="redis://127.0.0.1:$redis_port/0"
for _ in $(seq 50); do
  .venv/bin/python -c "import socket; socket.create_connection(('127.0.0.1', $redis_port), 0.2)" 2>/dev/null && break
  sleep 0.1
done

echo "PostgreSQL on 127.0.0.1:$pg_port, Redis on 127.0.0.1:$redis_port"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
