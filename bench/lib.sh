# Helpers for bench/<module>/run.sh. Sourced, not executed.
# PGHOST/PGPORT/PGUSER/PGDATABASE and PG_BIN are set by bench/run.sh.

bench_psql() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }

# pgbench_latency_ms SCRIPT_FILE SECONDS CLIENTS: average latency in ms of one
# run of SCRIPT_FILE (a pgbench custom script), measured by pgbench itself.
pgbench_latency_ms() {
  local script=$1 seconds=${2:-10} clients=${3:-1}
  "$PG_BIN/pgbench" -n -f "$script" -T "$seconds" -c "$clients" -j "$clients" 2>&1 \
    | awk '/latency average/ { print $4 }'
}

# report CASE OURS PEER_NAME PEER UNIT: one comparison (lower is better).
report() {
  local case=$1 ours=$2 peer_name=$3 peer=$4 unit=$5
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "${BENCH_MODULE:?}" "$case" "$ours" "$peer_name" "$peer" "$unit" >>"${BENCH_RESULTS:?}"
  awk -v c="$case" -v o="$ours" -v pn="$peer_name" -v p="$peer" -v u="$unit" \
    'BEGIN { r = (p > 0 ? o / p : 0); printf "  %-40s ours %.3f %s, %s %.3f %s: ours/peer %.3gx%s\n", c, o, u, pn, p, u, r, (r > 0 && r < 1 ? sprintf(" (peer %.3gx slower)", 1 / r) : "") }'
}

# median VALUES...: the median of whitespace-separated numbers on stdin
# (empty fields ignored).
median() { tr ' ' '\n' | awk 'NF { print $1 }' | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
