#!/usr/bin/env bash
# bench/partitions: saas partitions beside pg_partman (Debian 12 ships
# pg_partman 4.7.2, the peer measured here) on the same work, in one run:
#   1. set up 100 monthly parents (premake 3, 12 months retention)
#   2. one maintenance pass that has two new months to make per parent
#      (pg_partman's clock cannot be advanced, so premake is raised instead:
#      to 5 for ours and to 4 for pg_partman, whose maintenance then keeps one
#      month more than its create_parent did; the script checks that both
#      end with the same partitions)
#   3. rescue 100k rows (10 months) from a default partition
#      (pg_partman: CALL partition_data_proc)
# pg_partman runs with infinite_time_partitions = true, without which its
# maintenance skips parents that hold no rows yet (these do not).
# Each step is one psql call, timed by the wall clock around it.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/../lib.sh"
PARENTS=${PARTITIONS_PARENTS:-100}
ROWS=${PARTITIONS_ROWS:-100000}

# Partitions under the parents of each schema (ours|pg_partman).
partition_counts() {
  bench_psql -At -c "SELECT (SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhparent WHERE c.relnamespace = 'b_ours'::regnamespace), (SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhparent WHERE c.relnamespace = 'b_partman'::regnamespace)"
}

bench_psql >/dev/null <<SQL
SET client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS partman;
CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman;
DROP SCHEMA IF EXISTS b_ours CASCADE;
DROP SCHEMA IF EXISTS b_partman CASCADE;
CREATE SCHEMA b_ours;
CREATE SCHEMA b_partman;
DO \$\$
BEGIN
  FOR i IN 1..$PARENTS LOOP
    EXECUTE format('CREATE TABLE b_ours.t%s (id bigint GENERATED ALWAYS AS IDENTITY, at timestamptz NOT NULL, v int) PARTITION BY RANGE (at)', i);
    EXECUTE format('CREATE TABLE b_partman.t%s (id bigint GENERATED ALWAYS AS IDENTITY, at timestamptz NOT NULL, v int) PARTITION BY RANGE (at)', i);
  END LOOP;
  FOR s IN 1..2 LOOP
    EXECUTE format('CREATE TABLE %s.rescue (id bigint GENERATED ALWAYS AS IDENTITY, at timestamptz NOT NULL, v int) PARTITION BY RANGE (at)',
                   CASE s WHEN 1 THEN 'b_ours' ELSE 'b_partman' END);
  END LOOP;
END \$\$;
SQL

start=$(bench_psql -At -c "SELECT date_trunc('month', now())::date")

echo "  1. setting up $PARENTS parents"
ours_setup=$(timed "DO \$\$ BEGIN FOR i IN 1..$PARENTS LOOP
  PERFORM * FROM saas.create_monthly_partitions(format('b_ours.t%s', i)::regclass, 'at', 3, '12 months');
END LOOP; END \$\$")
partman_setup=$(timed "DO \$\$ BEGIN FOR i IN 1..$PARENTS LOOP
  PERFORM partman.create_parent(format('b_partman.t%s', i), 'at', 'native', 'monthly', p_premake := 3, p_start_partition := '$start', p_jobmon := false);
END LOOP;
UPDATE partman.part_config SET retention = '12 months', retention_keep_table = false, infinite_time_partitions = true; END \$\$")

counts=$(partition_counts)
echo "  partitions after setup (ours|pg_partman, default included): $counts"
require_equal_work "$counts"

echo "  2. one maintenance pass, two new months per parent"
bench_psql -c "UPDATE saas.partition_config SET premake = 5; UPDATE partman.part_config SET premake = 4" >/dev/null
ours_maint=$(timed "SELECT count(*) FROM saas.run_maintenance()")
partman_maint=$(timed "SELECT partman.run_maintenance(p_jobmon := false)")
counts=$(partition_counts)
echo "  partitions after maintenance (ours|pg_partman): $counts"
require_equal_work "$counts"

echo "  3. rescuing $ROWS rows from a default partition"
bench_psql >/dev/null <<SQL
SELECT count(*) FROM saas.create_monthly_partitions('b_ours.rescue', 'at', 1);
SELECT partman.create_parent('b_partman.rescue', 'at', 'native', 'monthly', p_premake := 1, p_start_partition := '$start', p_jobmon := false);
-- Ten months starting a year ahead: all land in the default partitions.
INSERT INTO b_ours.rescue (at, v) SELECT date_trunc('month', now()) + interval '12 months' + (g % 300) * interval '1 day' + g * interval '1 second', g FROM generate_series(1, $ROWS) g;
INSERT INTO b_partman.rescue (at, v) SELECT at, v FROM b_ours.rescue;
SQL
ours_rescue=$(timed "SELECT count(*) FROM saas.run_maintenance('b_ours.rescue')")
partman_rescue=$(timed "CALL partman.partition_data_proc('b_partman.rescue', p_batch := 1000, p_wait := 0, p_quiet := true)")
left=$(bench_psql -At -c "SELECT (SELECT count(*) FROM b_ours.rescue_default), (SELECT count(*) FROM b_partman.rescue_default), (SELECT count(*) FROM b_ours.rescue), (SELECT count(*) FROM b_partman.rescue)")
echo "  left in default (ours|pg_partman), then totals: $left"

report "set up $PARENTS monthly parents" "$ours_setup" "pg_partman 4.7.2" "$partman_setup" "ms"
report "maintenance pass, $PARENTS parents" "$ours_maint" "pg_partman 4.7.2" "$partman_maint" "ms"
report "rescue $ROWS rows from default" "$ours_rescue" "pg_partman 4.7.2" "$partman_rescue" "ms"
