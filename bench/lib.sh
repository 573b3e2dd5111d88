# shellcheck shell=bash
# Helpers for bench/<module>/run.sh. Sourced, not executed.
# PGHOST/PGPORT/PGUSER/PGDATABASE and PG_BIN are set by bench/run.sh.

bench_psql() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }

# bench_tmpdir VAR: make a temporary directory, store its path in VAR and
# remove it on exit. It takes the EXIT trap, so it refuses to replace one.
bench_tmpdir() {
  local _bench_tmpdir  # a local named VAR would shadow the caller's
  [ -z "$(trap -p EXIT)" ] || { echo "bench_tmpdir: an EXIT trap is already set" >&2; return 1; }
  _bench_tmpdir=$(mktemp -d) || return
  printf -v "$1" '%s' "$_bench_tmpdir"
  # The variable's name ($1) goes in now, its value is read at exit.
  # shellcheck disable=SC2064
  trap "rm -rf \"\$$1\"" EXIT
}

# timed SQL: wall-clock ms of one psql call running SQL.
timed() {
  local t0 t1
  t0=$(date +%s%N); bench_psql -c "$1" >/dev/null; t1=$(date +%s%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) / 1e6 }'
}

# pgbench_latency_ms SCRIPT_FILE SECONDS CLIENTS [PGBENCH_ARGS...]: average
# latency in ms of one run of SCRIPT_FILE (a pgbench custom script), measured
# by pgbench itself. PGBENCH_ARGS go in before -f (e.g. -M prepared).
pgbench_latency_ms() {
  local script=$1 seconds=${2:-10} clients=${3:-1}
  "$PG_BIN/pgbench" -n "${@:4}" -f "$script" -T "$seconds" -c "$clients" -j "$clients" 2>&1 \
    | awk '/latency average/ { print $4 }'
}

# record CASE OURS PEER_NAME PEER UNIT [SPREAD]: one results.tsv line, no
# printout (for figures that are not a timing comparison). SPREAD, free text
# (e.g. the interquartile ranges behind two medians), is a 7th column.
record() {
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "${BENCH_MODULE:?}" "$1" "$2" "$3" "$4" "$5" "${6-}" >>"${BENCH_RESULTS:?}"
}

# report CASE OURS PEER_NAME PEER UNIT [SPREAD]: one comparison (lower is
# better), recorded and printed.
report() {
  local case=$1 ours=$2 peer_name=$3 peer=$4 unit=$5 spread=${6-}
  record "$case" "$ours" "$peer_name" "$peer" "$unit" "$spread"
  awk -v c="$case" -v o="$ours" -v pn="$peer_name" -v p="$peer" -v u="$unit" -v s="$spread" \
    'BEGIN { r = (p > 0 ? o / p : 0); printf "  %-40s ours %.3f %s, %s %.3f %s: ours/peer %.3gx%s\n", c, o, u, pn, p, u, r, (r > 0 && r < 1 ? sprintf(" (peer %.3gx slower)", 1 / r) : ""); if (s != "") printf "    %s\n", s }'
}

# require_equal_work A|B [EXPECTED]: stop the module unless both halves of
# psql -At's "A|B" are equal (and equal EXPECTED if given): a comparison of
# unequal work means nothing.
require_equal_work() {
  local a=${1%|*} b=${1#*|}
  if [ "$a" != "$b" ] || [ "${2-$a}" != "$a" ]; then
    echo "  unequal work: the comparison is void" >&2
    exit 1
  fi
}

# median: the median of whitespace-separated numbers read from stdin (empty
# fields ignored), e.g. echo "${runs[*]}" | median.
median() { tr ' ' '\n' | awk 'NF { print $1 }' | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
