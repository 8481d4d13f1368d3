#!/usr/bin/env bash
# Figure hash_512mib: streaming SHA-256 of a 512 MiB file by our hasher
# (`flotilla-publisher hash`, the same code that hashes uploads and
# `verify --check-artifacts`: flotilla_signing::hash_reader, sha2 with
# SHA-NI detected at run time) against `openssl dgst -sha256` on the same
# file in the same run; best of 3 each, page cache warm for both.
# Prints: BENCH hash_512mib ratio_vs_openssl=<x> gbps=<y> openssl_gbps=<z>
# Goal (docs/benchmarks.md): ratio >= 0.9.
set -euo pipefail
root=${FLOTILLA_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
tmp=${BENCH_TMP:?run through scripts/bench}
bin="${CARGO_TARGET_DIR:-$root/target}/release/flotilla-publisher"
[ -x "$bin" ] || cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p flotilla-publisher >&2
file="$tmp/hash-512mib.bin"
size=$((512 * 1024 * 1024))
openssl rand -out "$file" "$size" 2>/dev/null || head -c "$size" /dev/urandom >"$file"
cat "$file" >/dev/null # warm the page cache

# best_ns CMD...: the fastest of 3 runs, in nanoseconds
best_ns() {
  local best="" s e d
  for _ in 1 2 3; do
    s=$(date +%s%N)
    "$@" >/dev/null
    e=$(date +%s%N)
    d=$((e - s))
    if [ -z "$best" ] || [ "$d" -lt "$best" ]; then best=$d; fi
  done
  echo "$best"
}

ours=$("$bin" hash "$file" | cut -d' ' -f1)
theirs=$(openssl dgst -sha256 -r "$file" | cut -d' ' -f1)
if [ "$ours" != "$theirs" ]; then
  echo "hash_512mib: digests differ: ours $ours, openssl $theirs" >&2
  exit 1
fi
ours_ns=$(best_ns "$bin" hash "$file")
openssl_ns=$(best_ns openssl dgst -sha256 "$file")
rm -f "$file"
awk -v b="$size" -v o="$ours_ns" -v s="$openssl_ns" 'BEGIN {
  g = b / o; og = b / s;   # bytes per ns == GB/s
  printf "BENCH hash_512mib ratio_vs_openssl=%.2f gbps=%.2f openssl_gbps=%.2f\n", g / og, g, og
}'
