#!/usr/bin/env bash
# PostgREST instances for `make run` and `make test`, with the binary that
# `make deps` installed (target/bin/postgrest, PostgREST 12.0.2).
#
#   postgrest.sh start NAME PORT DB_URI SCHEMAS   write target/postgrest/NAME/postgrest.conf
#                                                 with a fresh random JWT secret
#                                                 (target/postgrest/NAME/jwt-secret), start
#                                                 it, wait until its admin server (PORT+1)
#                                                 says /ready (else exit 1)
#   postgrest.sh stop NAME                        stop it if running (no error when it is not)
#
# SCHEMAS is PostgREST's db-schemas ("api" or "api, saas_api"). Every instance
# uses db-anon-role = "anon" and db-pre-request = "saas.pre_request".
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
POSTGREST=${POSTGREST:-$ROOT/target/bin/postgrest}

cmd=${1:?usage: postgrest.sh start|stop NAME ...}
name=${2:?instance name}
dir="$ROOT/target/postgrest/$name"
pidfile="$dir/postgrest.pid"

# The pid in pidfile when it is still a running postgrest (not a reused pid).
running_pid() {
  [ -f "$pidfile" ] || return 1
  local pid; pid=$(cat "$pidfile")
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = postgrest ] \
    && echo "$pid"
}

stop_instance() {
  local pid
  if pid=$(running_pid); then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    echo "stopped PostgREST '$name' (pid $pid)"
  fi
  rm -f "$pidfile"
}

case "$cmd" in
  start)
    port=${3:?port}
    db_uri=${4:?db uri}
    schemas=${5:?db-schemas}
    [ -x "$POSTGREST" ] || { echo "postgrest.sh: $POSTGREST is missing; run make deps" >&2; exit 1; }
    stop_instance
    # Another server on either port would answer the readiness check and the
    # requests meant for this one: refuse to start instead.
    for p in "$port" $((port + 1)); do
      if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$p/"; then
        echo "postgrest.sh: port $p is already in use; choose another (PGRST_PORT / PGRST_TEST_PORT)" >&2
        exit 1
      fi
    done
    mkdir -p "$dir"
    # A new secret per start: tokens signed for an earlier run stop working.
    (umask 077 && openssl rand -hex 32 | tr -d '\n' >"$dir/jwt-secret")
    cat >"$dir/postgrest.conf" <<CONF
# Written by scripts/postgrest.sh for '$name'; rewritten on every start.
db-uri = "$db_uri"
db-schemas = "$schemas"
db-anon-role = "anon"
db-pre-request = "saas.pre_request"
db-pool = 10
server-host = "127.0.0.1"
server-port = $port
admin-server-port = $((port + 1))
jwt-secret = "@$dir/jwt-secret"
log-level = "error"
CONF
    nohup "$POSTGREST" "$dir/postgrest.conf" >"$dir/postgrest.log" 2>&1 &
    echo $! >"$pidfile"
    # Ready: connected, schema cache loaded (the admin server's /ready).
    for _ in $(seq 1 100); do
      code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$((port + 1))/ready" || true)
      running_pid >/dev/null || break
      [ "$code" = 200 ] && { echo "started PostgREST '$name' on port $port"; exit 0; }
      sleep 0.1
    done
    echo "postgrest.sh: PostgREST '$name' did not become ready on port $port; last lines of $dir/postgrest.log:" >&2
    tail -n 20 "$dir/postgrest.log" >&2
    stop_instance >/dev/null
    exit 1
    ;;
  stop)
    stop_instance
    ;;
  *)
    echo "unknown command: $cmd" >&2
    exit 2
    ;;
esac
