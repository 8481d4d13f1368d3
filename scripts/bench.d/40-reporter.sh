#!/usr/bin/env bash
# Reporter benchmarks (goals in docs/benchmarks.md):
#   BENCH reporter_ingest events_per_s= ratio_vs_raw_sqlite= ...
#       HTTP batches of 100 events from a second process, against a plain
#       rusqlite insert of the same rows in transactions of 100 rows (the same
#       batches) into the same schema with the same pragmas; the figure against
#       1000-row transactions is printed too.
#   BENCH reporter_ingest_fsync events_per_s=
#       the same HTTP load with durability = "power_loss" (fsync per commit).
#   BENCH reporter_latency p50_ms= p99_ms= rate=1100
#       batches of 20 events at 1,100/s (open loop, from a second process,
#       1,000 agents) for 20 s, latency from each request's scheduled time;
#       started after the ingest runs' files are deleted and `sync`ed;
#       steal_pct= is the share of the machine's CPU time the hypervisor
#       took for other guests meanwhile (p99 rises with it).
#   BENCH reporter_checkin p50_ms= p99_ms= rate=1111 events_p50_ms= events_p99_ms=
#       liveness: 1M agents checking in every 15 minutes (~1,111 check-ins/s,
#       POST /api/v1/checkin, from a second process, open loop) on top of the
#       reporter_latency load (batches of 20 events at 1,100/s) for 20 s: the
#       check-ins' latency, and the event batches' latency meanwhile (which
#       must stay within reporter_latency's goal).
#   BENCH reporter_soak rss_mib_start= rss_mib_end= rss_mib_max= secs=
#       the server's RSS over the latency run (secs=20), or over a longer run
#       of the same load when FLOTILLA_BENCH_SOAK_SECS is set (600 for the
#       10-minute soak).
set -euo pipefail
root=${FLOTILLA_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
target=${CARGO_TARGET_DIR:-$root/target}
bin=$target/release/flotilla-reporter
gen=$target/release/examples/reporter_bench
if [ ! -x "$bin" ] || [ ! -x "$gen" ]; then
  cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p flotilla-reporter --bins --examples >&2
fi
tmp=$(mktemp -d "${BENCH_TMP:-${TMPDIR:-/tmp}}/reporter.XXXXXX")
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
(umask 077 && printf 'bench-admin-token-0123456789abcdef\n' > "$tmp/admin")

# start_server NAME [CONFIG-LINES]: sets $pid, $url and $token.
start_server() {
  local dir=$tmp/$1
  mkdir -p "$dir"
  # 1000 generated agents enroll from this one address with one token.
  printf '%s\n' "enroll_burst = 1000000.0" "${2:-}" > "$dir/config.toml"
  "$bin" init --db "$dir/r.db" 2>/dev/null
  token=$("$bin" token create --db "$dir/r.db" --expires 1d --uses unlimited 2>/dev/null)
  FLOTILLA_LOG=warn "$bin" serve --db "$dir/r.db" --listen 127.0.0.1:0 \
    --admin-token-file "$tmp/admin" --config "$dir/config.toml" > "$dir/out" 2> "$dir/err" &
  pid=$!
  for _ in $(seq 1 500); do
    grep -q '^listening on ' "$dir/out" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$dir/err" >&2; exit 1; }
    sleep 0.01
  done
  url=http://$(sed -n 's/^listening on //p' "$dir/out")
}
stop_server() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }
# CPU seconds the server has used so far (user + system).
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$pid/stat"; }
field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }
# shellcheck source=lib/steal.sh
source "$root/scripts/bench.d/lib/steal.sh"

unlimited='rate_limit_per_second = 1000000.0
rate_limit_burst = 1000000.0'

start_server ingest "$unlimited"
before=$(cpu_s)
out=$("$gen" ingest --url "$url" --enroll-token "$token" --batch 100 --concurrency 16 --secs 10)
after=$(cpu_s)
stop_server
http=$(field "$out" events_per_s)
# server CPU per event (includes enrolling 64 agents): stable across noisy runs
cpu_us=$(awk -v a="$before" -v b="$after" -v n="$(field "$out" events)" 'BEGIN { printf "%.1f", (b - a) * 1e6 / n }')

start_server fsync "$unlimited
durability = \"power_loss\""
out=$("$gen" ingest --url "$url" --enroll-token "$token" --batch 100 --concurrency 16 --secs 10)
stop_server
fsync=$(field "$out" events_per_s)

raw100=$(field "$("$gen" raw --db "$tmp/raw100.db" --batch 100 --rows 300000)" rows_per_s)
raw1000=$(field "$("$gen" raw --db "$tmp/raw1000.db" --batch 1000 --rows 300000)" rows_per_s)
ratio=$(awk -v a="$http" -v b="$raw100" 'BEGIN { printf "%.2f", a / b }')
ratio1000=$(awk -v a="$http" -v b="$raw1000" 'BEGIN { printf "%.2f", a / b }')
echo "BENCH reporter_ingest events_per_s=$http ratio_vs_raw_sqlite=$ratio raw_sqlite_events_per_s=$raw100 raw_sqlite_1000_events_per_s=$raw1000 ratio_vs_raw_sqlite_1000=$ratio1000 server_cpu_us_per_event=$cpu_us load_avg=$(cut -d' ' -f1 /proc/loadavg)"
echo "BENCH reporter_ingest_fsync events_per_s=$fsync"

# The ingest runs above leave about 2 GB of databases whose dirty pages the
# kernel writes back over the next ~30 s; drop them and flush, so that
# writeback does not land on the latency run's fsyncs.
rm -rf "$tmp/ingest" "$tmp/fsync" "$tmp"/raw*.db*
sync
start_server latency ""
t0=$(cpu_ticks)
out=$("$gen" latency --url "$url" --enroll-token "$token" --agents 1000 --batch 20 --rate 1100 --secs 20 --server-pid "$pid")
echo "BENCH reporter_latency p50_ms=$(field "$out" p50_ms) p99_ms=$(field "$out" p99_ms) rate=1100 achieved_rate=$(field "$out" achieved_rate) max_ms=$(field "$out" max_ms) steal_pct=$(steal_pct "$t0" "$(cpu_ticks)") load_avg=$(cut -d" " -f1 /proc/loadavg)"
soak=${FLOTILLA_BENCH_SOAK_SECS:-}
if [ -n "$soak" ]; then
  out=$("$gen" latency --url "$url" --enroll-token "$token" --agents 1000 --batch 20 --rate 1100 --secs "$soak" --server-pid "$pid")
else
  soak=20
fi
cout=$("$gen" latency --url "$url" --enroll-token "$token" --agents 1000 --batch 20 --rate 1100 --secs 20 --checkin-rate 1111)
echo "BENCH reporter_checkin p50_ms=$(field "$cout" checkin_p50_ms) p99_ms=$(field "$cout" checkin_p99_ms) rate=1111 checkins=$(field "$cout" checkins) events_p50_ms=$(field "$cout" p50_ms) events_p99_ms=$(field "$cout" p99_ms) load_avg=$(cut -d" " -f1 /proc/loadavg)"
echo "BENCH reporter_soak rss_mib_start=$(field "$out" rss_mib_start) rss_mib_end=$(field "$out" rss_mib_end) rss_mib_max=$(field "$out" rss_mib_max) secs=$soak p99_ms=$(field "$out" p99_ms) load_avg=$(cut -d" " -f1 /proc/loadavg)"
stop_server
