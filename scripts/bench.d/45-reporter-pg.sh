#!/usr/bin/env bash
# Reporter benchmarks on PostgreSQL (issue 14; goals in docs/benchmarks.md),
# against a server of their own (scripts/pg-server, fsync ON: every commit
# waits for the disk, as a production server's does; the tests' server has
# it off), on the same machine as the reporter and the load:
#   BENCH reporter_ingest_pg events_per_s= ratio_vs_raw_pg= raw_pg_events_per_s= raw_pg_method=
#       HTTP batches of 100 events (16 at once, 64 agents, 10 s, from a second
#       process) into PostgreSQL, against the best raw load of the same rows
#       in transactions of 100 rows into the same server with no reporter in
#       between (examples/reporter_bench_pg_raw: binary COPY, as the
#       reporter's writer stores events, and a multi-row INSERT ... unnest
#       ... ON CONFLICT, as its guarded insert, on 2 and 4 connections; the
#       fastest of the four).
#   BENCH reporter_latency_pg p50_ms= p99_ms= rate=1100
#       batches of 20 events at 1,100/s (open loop, 1,000 agents) for 20 s.
#   BENCH reporter_ingest_pg_2replicas events_per_s= ratio_vs_1replica=
#       two reporters over one database, each loaded like reporter_ingest_pg
#       with 8 at once (16 in all) by a generator of its own; the sum.
set -euo pipefail
# An open-loop load keeps a connection per request in flight: when the
# server falls behind they pile up: as many as the hard limit allows.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
root=${FLOTILLA_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
target=${CARGO_TARGET_DIR:-$root/target}
bin=$target/release/flotilla-reporter
gen=$target/release/examples/reporter_bench
raw=$target/release/examples/reporter_bench_pg_raw
if [ ! -x "$bin" ] || [ ! -x "$gen" ] || [ ! -x "$raw" ]; then
  cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p flotilla-reporter --bins --examples >&2
fi
tmp=$(mktemp -d "${BENCH_TMP:-${TMPDIR:-/tmp}}/reporter-pg.XXXXXX")
# Its own directory under /tmp, as scripts/test's: run as root, the server
# runs as `postgres`, which must reach it.
pg_dir=$(mktemp -d /tmp/flotilla-bench-pg.XXXXXX)
# shellcheck source=../pg-server
source "$root/scripts/pg-server"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pg_server_stop
  rm -rf "$tmp" "$pg_dir"
}
trap cleanup EXIT
PG_SERVER_FSYNC=on pg_server_start "$pg_dir"
pw=$FLOTILLA_TEST_PG_PASSWORD_FILE
(umask 077 && printf 'bench-admin-token-0123456789abcdef\n' > "$tmp/admin")
field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }
# shellcheck source=lib/steal.sh
source "$root/scripts/bench.d/lib/steal.sh"
# fresh_db: the URL of a new, empty database on the server (a name of its
# own: it runs in a $(...) subshell, so a counter would not count). Each
# figure starts from a checkpoint, with the databases of the figures
# before it dropped (drop_dbs), so it measures its own load, not the
# checkpoint or the autovacuum of the rows the one before left behind
# (measured: the latency p99 at 11-18 ms after the ingest figures, 6-7
# ms alone).
fresh_db() {
  local n
  n=$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
  PGPASSWORD=$(cat "$pw") psql -q "$FLOTILLA_TEST_PG_URL" -c "CREATE DATABASE bench_$n" >/dev/null
  echo "${FLOTILLA_TEST_PG_URL/\/postgres\?/\/bench_$n?}"
}
drop_dbs() {
  local d
  for d in $(PGPASSWORD=$(cat "$pw") psql -tA "$FLOTILLA_TEST_PG_URL" -c "SELECT datname FROM pg_database WHERE datname LIKE 'bench\_%'"); do
    PGPASSWORD=$(cat "$pw") psql -q "$FLOTILLA_TEST_PG_URL" -c "DROP DATABASE $d WITH (FORCE)" >/dev/null
  done
  PGPASSWORD=$(cat "$pw") psql -q "$FLOTILLA_TEST_PG_URL" -c "CHECKPOINT" >/dev/null
}
# start_replica DB NAME [CONFIG-LINES]: appends to $pids, sets $url.
start_replica() {
  local dir=$tmp/$2
  mkdir -p "$dir"
  printf '%s\n' "enroll_burst = 1000000.0" "${3:-}" > "$dir/config.toml"
  FLOTILLA_LOG=warn "$bin" serve --db "$1" --db-password-file "$pw" --listen 127.0.0.1:0 \
    --admin-token-file "$tmp/admin" --config "$dir/config.toml" > "$dir/out" 2> "$dir/err" &
  pids+=($!)
  for _ in $(seq 1 1000); do
    grep -q '^listening on ' "$dir/out" 2>/dev/null && break
    kill -0 "${pids[-1]}" 2>/dev/null || { cat "$dir/err" >&2; exit 1; }
    sleep 0.01
  done
  url=http://$(sed -n 's/^listening on //p' "$dir/out")
}
stop_replicas() {
  for p in "${pids[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
  pids=()
}
token_for() { "$bin" token create --db "$1" --db-password-file "$pw" --expires 1d --uses unlimited 2>/dev/null; }

unlimited='rate_limit_per_second = 1000000.0
rate_limit_burst = 1000000.0'

db=$(fresh_db)
start_replica "$db" ingest "$unlimited"
token=$(token_for "$db")
t0=$(cpu_ticks)
out=$("$gen" ingest --url "$url" --enroll-token "$token" --batch 100 --concurrency 16 --secs 10)
http=$(field "$out" events_per_s)
steal=$(steal_pct "$t0" "$(cpu_ticks)")
stop_replicas

best=0 best_method=
for m in copy unnest; do
  for c in 2 4; do
    drop_dbs
    r=$(field "$("$raw" --url "$(fresh_db)" --password-file "$pw" --method $m --connections $c --batch 100 --rows 300000)" rows_per_s)
    if awk -v a="$r" -v b="$best" 'BEGIN { exit !(a > b) }'; then best=$r best_method=$m/$c; fi
  done
done
ratio=$(awk -v a="$http" -v b="$best" 'BEGIN { printf "%.2f", a / b }')
echo "BENCH reporter_ingest_pg events_per_s=$http ratio_vs_raw_pg=$ratio raw_pg_events_per_s=$best raw_pg_method=$best_method fsync=on steal_pct=$steal load_avg=$(cut -d' ' -f1 /proc/loadavg)"

drop_dbs
db=$(fresh_db)
start_replica "$db" latency ""
token=$(token_for "$db")
t0=$(cpu_ticks)
out=$("$gen" latency --url "$url" --enroll-token "$token" --agents 1000 --batch 20 --rate 1100 --secs 20)
echo "BENCH reporter_latency_pg p50_ms=$(field "$out" p50_ms) p99_ms=$(field "$out" p99_ms) rate=1100 achieved_rate=$(field "$out" achieved_rate) max_ms=$(field "$out" max_ms) fsync=on steal_pct=$(steal_pct "$t0" "$(cpu_ticks)") load_avg=$(cut -d" " -f1 /proc/loadavg)"
stop_replicas

drop_dbs
db=$(fresh_db)
start_replica "$db" two-a "$unlimited"
url_a=$url
start_replica "$db" two-b "$unlimited"
url_b=$url
token=$(token_for "$db")
"$gen" ingest --url "$url_a" --enroll-token "$token" --batch 100 --concurrency 8 --secs 10 > "$tmp/two-a.out" &
ga=$!
"$gen" ingest --url "$url_b" --enroll-token "$token" --batch 100 --concurrency 8 --secs 10 > "$tmp/two-b.out" &
gb=$!
wait "$ga" "$gb"
two=$(awk -v a="$(field "$(cat "$tmp/two-a.out")" events_per_s)" -v b="$(field "$(cat "$tmp/two-b.out")" events_per_s)" 'BEGIN { printf "%d", a + b }')
echo "BENCH reporter_ingest_pg_2replicas events_per_s=$two ratio_vs_1replica=$(awk -v a="$two" -v b="$http" 'BEGIN { printf "%.2f", a / b }') fsync=on load_avg=$(cut -d' ' -f1 /proc/loadavg)"
stop_replicas
