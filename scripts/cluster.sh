#!/usr/bin/env bash
# Local PostgreSQL clusters for `make run`, `make test` and `make bench`.
#
#   cluster.sh start  NAME PORT [fresh]   start (initdb first if needed; `fresh` wipes it);
#                                         PG_EXTRA_CONF: more postgresql.conf lines (a test's
#                                         postmaster settings, e.g. saas.llm_hit_slots = 64)
#   cluster.sh stop   NAME                stop if running (no error when it is not)
#   cluster.sh remove NAME                stop and delete its data
#   cluster.sh status NAME                exit 0 when running
#
# PostgreSQL refuses to run as root, so every cluster belongs to the
# `postgres` user. Data lives in target/pg/NAME; when the checkout sits where
# `postgres` cannot reach (a clone under /root), the data goes to /var/tmp and
# target/pg/NAME is a symlink to it.
set -euo pipefail

PG_MAJOR=${PG_MAJOR:-15}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/${PG_MAJOR}/bin}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PG_USER=${PG_USER:-postgres}

cmd=${1:?usage: cluster.sh start|stop|remove|status NAME [PORT] [fresh]}
name=${2:?cluster name}
link="$ROOT/target/pg/$name"

as_pg() {
  # From /, so postgres never trips over a working directory it cannot enter.
  if [ "$(id -un)" = "$PG_USER" ]; then (cd / && "$@"); else (cd / && runuser -u "$PG_USER" -- "$@"); fi
}

cluster_dir() {
  # The directory that holds data/ and log, resolving the /var/tmp fallback.
  if [ -L "$link" ]; then readlink -f "$link"; else echo "$link"; fi
}

is_running() {
  local dir; dir=$(cluster_dir)
  [ -f "$dir/data/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1
}

stop_cluster() {
  local dir; dir=$(cluster_dir)
  if is_running; then
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    echo "stopped cluster '$name'"
  fi
}

make_dir() {
  mkdir -p "$ROOT/target/pg"
  if [ -e "$link" ] || [ -L "$link" ]; then return; fi
  mkdir -p "$link"
  chown "$PG_USER:$PG_USER" "$link"
  if ! as_pg test -w "$link" 2>/dev/null; then
    # postgres cannot reach the checkout: keep the data under /var/tmp.
    rmdir "$link"
    local hash; hash=$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)
    local real="/var/tmp/pg_saas-$hash/$name"
    mkdir -p "$real"
    chown "$PG_USER:$PG_USER" "$real" "$(dirname "$real")"
    ln -s "$real" "$link"
  fi
}

case "$cmd" in
  start)
    port=${3:?port}
    fresh=${4:-}
    stop_cluster
    if [ "$fresh" = fresh ]; then
      rm -rf "$(cluster_dir)"
      rm -f "$link"
    fi
    make_dir
    dir=$(cluster_dir)
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust \
        --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    # Clients connect over TCP; the socket is a convenience, skipped where the
    # path would exceed the kernel's limit for socket names (107 bytes).
    socket_dir=$dir
    [ ${#socket_dir} -le 90 ] || socket_dir=''
    # Rewritten on every start so a changed setting takes effect on re-runs.
    cat >"$dir/data/pg_saas_cluster.conf" <<EOF
port = $port
listen_addresses = 'localhost'
unix_socket_directories = '$socket_dir'
shared_preload_libraries = '${PRELOAD-pg_cron,pg_saas}'
cron.database_name = '${CRON_DB:-postgres}'
max_connections = 200
shared_buffers = ${PG_SHARED_BUFFERS:-128MB}
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
log_line_prefix = '%m [%p] %d '
timezone = 'UTC'
${PG_EXTRA_CONF:-}
EOF
    chown "$PG_USER:$PG_USER" "$dir/data/pg_saas_cluster.conf"
    grep -q "^include_if_exists = 'pg_saas_cluster.conf'" "$dir/data/postgresql.conf" \
      || echo "include_if_exists = 'pg_saas_cluster.conf'" >>"$dir/data/postgresql.conf"
    # RUST_BACKTRACE=1 as on a server whose operator turned it on: pg_saas
    # must still never send a Rust backtrace to a client (tests/fuzz.rs).
    if ! as_pg env RUST_BACKTRACE=1 "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null; then
      echo "cluster '$name' failed to start; last lines of $dir/server.log:" >&2
      tail -n 20 "$dir/server.log" >&2
      exit 1
    fi
    echo "started cluster '$name' on port $port (data: $dir/data)"
    ;;
  stop)
    stop_cluster
    ;;
  remove)
    stop_cluster
    rm -rf "$(cluster_dir)"
    rm -rf "$link"
    ;;
  status)
    is_running
    ;;
  *)
    echo "unknown command: $cmd" >&2
    exit 2
    ;;
esac
