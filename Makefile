# pg_saas — two commands on a fresh Debian 12 machine (as root):
#   make run    build, install, start a local PostgreSQL with the extension and a demo
#   make test   cargo test, pg_regress, integration tests; leaves no server running
# Every target depends on `deps`, which installs what is missing and skips the rest.

PG_MAJOR    ?= 15
PG_CONFIG   ?= /usr/lib/postgresql/$(PG_MAJOR)/bin/pg_config
# cargo pgrx install profile: release by default; `make test PGRX_PROFILE=` builds debug.
PGRX_PROFILE ?= --release
RUN_PORT    ?= 54330
TEST_PORT   ?= 54331
BENCH_PORT  ?= 54332
# tests/backup.rs starts two clusters of its own, on this port and the next;
# tests/llm.rs one with a tiny saas.llm_hit_slots on the port after those.
BACKUP_PORT ?= 54334
DEMO_DB     ?= pg_saas_demo
REGRESS_DB  ?= pg_saas_regress
IT_DB       ?= pg_saas_it

export PG_MAJOR PG_CONFIG RUN_PORT TEST_PORT BENCH_PORT BACKUP_PORT DEMO_DB REGRESS_DB IT_DB
# cargo-pgrx and cargo live here when rustup installed them for root.
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: all deps build install run stop lint test unit installcheck integration \
        regress-run integration-run js-run bench clean help

all: help

help:
	@echo "make run          build, install, start the demo cluster on port $(RUN_PORT) and PostgREST on :3000"
	@echo "make stop         stop the demo's PostgREST and cluster"
	@echo "make test         cargo test + pg_regress + integration tests (upgrade test included)"
	@echo "make lint         rustfmt, clippy -D warnings, shellcheck, SQL whitespace"
	@echo "make installcheck pg_regress only, against a fresh test cluster"
	@echo "make integration  tokio-postgres tests only, against a fresh test cluster"
	@echo "make bench        benchmarks against their peers (not part of make test)"
	@echo "make deps         install build and runtime dependencies (idempotent)"

deps:
	@scripts/deps.sh

build: deps
	cargo build $(PGRX_PROFILE)

# cargo pgrx install writes the current version's script and copies the
# upgrade scripts (sql/pg_saas--A--B.sql); released install scripts, kept
# frozen as sql/pg_saas--X.Y.Z.sql, are installed beside them so that
# `CREATE EXTENSION pg_saas VERSION 'X.Y.Z'` works (the upgrade test uses it).
install: deps
	cargo pgrx install $(PGRX_PROFILE) --pg-config $(PG_CONFIG)
	@for f in sql/pg_saas--*.sql; do case "$$f" in *--*--*) ;; \
	  *) install -m 0644 "$$f" "$$($(PG_CONFIG) --sharedir)/extension/";; esac; done

run: install
	@scripts/run.sh

stop:
	@scripts/run.sh stop

# rustfmt, clippy (warnings are errors), shellcheck, SQL whitespace; CI runs
# it before make test.
lint: deps
	scripts/lint.sh

# --- tests -------------------------------------------------------------------
test: deps
	$(MAKE) unit
	$(MAKE) install
	scripts/with-test-cluster.sh $(MAKE) regress-run integration-run js-run
	@echo "make test: all passed"

# 1. pure Rust logic (no server)
unit: deps
	cargo test --lib

# 2. pg_regress (PGXS, --use-existing) against a fresh test cluster
installcheck: install
	scripts/with-test-cluster.sh $(MAKE) regress-run

# 3. integration tests against a fresh test cluster: tokio-postgres (PostgREST
#    emulation) and tests/http.rs through the real PostgREST that
#    with-test-cluster.sh starts on TEST_PORT + 9 (PG_SAAS_HTTP_URL, PG_SAAS_JWT_SECRET)
integration: install
	scripts/with-test-cluster.sh $(MAKE) integration-run js-run

# The *-run targets expect the test cluster that with-test-cluster.sh started.
regress-run:
	$(MAKE) -C pg_regress installcheck PG_CONFIG=$(PG_CONFIG) PGPORT=$(TEST_PORT) \
	  REGRESS_DB=$(REGRESS_DB) OUTDIR=$(CURDIR)/target/regress \
	  || { cat target/regress/regression.diffs 2>/dev/null | head -n 200; exit 1; }

integration-run:
	PG_SAAS_TEST_URL="host=localhost port=$(TEST_PORT) user=postgres dbname=$(IT_DB)" \
	  cargo test --test '*' -- --test-threads=4

# 4. tests/js: what a front end does with postgrest-js (pinned in tests/js/,
#    npm ci by make deps), through the same PostgREST, after the Rust tests;
#    node's test runner, spec reporter.
js-run:
	cd tests/js && PG_SAAS_TEST_URL="host=localhost port=$(TEST_PORT) user=postgres dbname=$(IT_DB)" \
	  node --test --test-reporter=spec client.test.mjs

# --- benchmarks ----------------------------------------------------------------
bench: install
	@bench/run.sh

clean:
	-scripts/run.sh stop
	-scripts/cluster.sh remove test
	-scripts/cluster.sh remove bench
	cargo clean
