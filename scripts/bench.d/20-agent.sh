#!/usr/bin/env bash
# Agent benchmarks (goals in docs/benchmarks.md), all on loopback:
#   BENCH idle_pass_http wall_ms= peak_rss_mib= server=
#       `flotilla-agent run` with nothing to do: static HTTP store, manifest
#       answered 304; median of 20 passes, peak RSS the largest of them
#       (/usr/bin/time -f %M). The store is served by nginx (sendfile, the
#       reference server of the goals in docs/benchmarks.md; nginx-light is
#       installed from Debian when missing). Only if that fails does it fall
#       back to python3 -m http.server, with a WARNING that the download
#       figures are not comparable; `server=` says which.
#   BENCH idle_pass_git ratio_vs_git_fetch= agent_ms= git_fetch_ms=
#       the same pass with the fleet repo served by `git daemon`, against
#       `git fetch` of the same repo into a bare clone by the git CLI;
#       median of 10 each, interleaved.
#   BENCH download_verify_512mib ratio_vs_curl= peak_rss_mib= agent_s= curl_s=
#         sync_s= ratio_median= agent_cpu_s= curl_cpu_s= steal_pct= load= server=
#       the agent's download code (examples/download: Range-capable, size
#       cap, SHA-256 and writing on threads of their own, fsync + rename)
#       against `curl -o` of the same 512 MiB file from the same server;
#       5 rounds, interleaved. ratio_vs_curl, agent_s and curl_s: best of 5
#       each; ratio_median: median of the 5 rounds' ratios. sync_s: the part
#       of the agent's best run spent in fsync + rename after the last byte
#       (curl does no fsync). *_cpu_s: median user+sys CPU; the agent's
#       extra is SHA-256, so on a 2-core machine that others load, the wall
#       ratio tends to the CPU ratio. load: 1-minute load average before.
#   BENCH agent_binary size_mib=
#       the release build of flotilla-agent (stripped by the release profile).
#   BENCH fleet_sim_100k decide_us_per_agent= wave_share_max_err_pp= spread_ks=
#       examples/fleet_sim: the decision over 100,000 simulated agents.
set -euo pipefail
root=${FLOTILLA_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
# shellcheck source=lib/steal.sh
source "$root/scripts/bench.d/lib/steal.sh"
tmp=${BENCH_TMP:?run through scripts/bench}/agent
target=${CARGO_TARGET_DIR:-$root/target}
agent=$target/release/flotilla-agent
pub=$target/release/flotilla-publisher
ex=$target/release/examples
if [ ! -x "$agent" ] || [ ! -x "$ex/fleet_sim" ] || [ ! -x "$ex/download" ]; then
  cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p flotilla-agent --bins --examples >&2
fi
[ -x "$pub" ] || cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p flotilla-publisher >&2
mkdir -p "$tmp"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do sleep 0.05; done; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# --- agent_binary
size=$(stat -c %s "$agent")
awk -v s="$size" 'BEGIN { printf "BENCH agent_binary size_mib=%.2f\n", s / 1048576 }'

# --- fleet_sim_100k
"$ex/fleet_sim"

# --- a fleet whose channel names the running version (nothing to do)
read -r _ version triple <<<"$("$agent" version)"
triple=${triple//[()]/}
fleet=$tmp/fleet store=$tmp/store keys=$tmp/keys
mkdir -p "$store" "$keys"
"$pub" init "$fleet" --fleet bench >/dev/null 2>&1
P() { "$pub" --repo "$fleet" "$@" >/dev/null 2>&1; }
P keygen --out "$keys/root.pem"
P keygen --out "$keys/release.pem"
P root init --root-key "$keys/root.pub.pem" --release-key "$keys/release.pub.pem"
P root sign --key "$keys/root.pem"
P release add --version "$version" --target "$triple" --file "$agent" --store "$store"
P rollout set --channel stable --release "$version" --start 2020-01-01T00:00:00Z --waves 'all=100%@0s/0s'
P sign --key "$keys/release.pem"
git -C "$fleet" add -A
git -C "$fleet" -c user.name=bench -c user.email=bench@example.invalid commit -qm sign
P publish --store "$store"

http_port=$(free_port)
find_nginx() { command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true; }
nginx_bin=$(find_nginx)
if [ -z "$nginx_bin" ]; then
  # The download goal assumes nginx (sendfile): python's http.server costs the
  # transfer a core of its own (1.33x curl against nginx's 0.85x for the same
  # build), so install the reference server rather than measure another one.
  echo "# installing nginx-light (the download goal's reference server)" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nginx-light; } >&2 || true
  nginx_bin=$(find_nginx)
fi
if [ -n "$nginx_bin" ]; then
  server=nginx
  mkdir -p "$tmp/nginx"
  cat >"$tmp/nginx/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
$([ "$(id -u)" = 0 ] && echo "user root;")
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log;
events { worker_connections 64; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  default_type application/octet-stream;
  client_body_temp_path $tmp/nginx;
  proxy_temp_path $tmp/nginx;
  fastcgi_temp_path $tmp/nginx;
  uwsgi_temp_path $tmp/nginx;
  scgi_temp_path $tmp/nginx;
  server { listen 127.0.0.1:$http_port; root $store; }
}
NGINX
  "$nginx_bin" -p "$tmp/nginx" -e "$tmp/nginx/error.log" -c "$tmp/nginx/nginx.conf" >/dev/null 2>&1 &
else
  server=python3
  echo "# WARNING: nginx could not be installed: serving with python3 -m http.server." >&2
  echo "# WARNING: download_verify_512mib and idle_pass_http are NOT comparable with their goals (server=python3)." >&2
  python3 -m http.server --bind 127.0.0.1 --directory "$store" "$http_port" >/dev/null 2>&1 &
fi
pids+=($!)
git_port=$(free_port)
"$(git --exec-path)/git-daemon" --reuseaddr --base-path="$tmp" --export-all --port="$git_port" --listen=127.0.0.1 "$tmp" >/dev/null 2>&1 &
pids+=($!)
wait_port "$http_port"
wait_port "$git_port"

# make_host DIR SOURCE-TOML: a host running this build, first pass done.
make_host() {
  local h=$1
  mkdir -p "$h/etc" "$h/opt/versions/$version"
  cp "$fleet/root/1.root.json" "$h/etc/root.json"
  cp "$agent" "$h/opt/versions/$version/flotilla-agent"
  ln -sfn "versions/$version" "$h/opt/current"
  cat >"$h/etc/agent.toml" <<TOML
agent_id = "bench"
channel = "stable"
trust_root = "$h/etc/root.json"
state_dir = "$h/state"
install_dir = "$h/opt"
[source]
$2
[artifacts]
base_url = "http://127.0.0.1:$http_port/"
TOML
  "$h/opt/current/flotilla-agent" --config "$h/etc/agent.toml" run >/dev/null
}

# ms_rss CMD...: "<wall ms> <peak rss KiB>"
ms_rss() {
  local s e
  s=$(date +%s%N)
  /usr/bin/time -f %M -o "$tmp/rss" "$@" >/dev/null 2>&1
  e=$(date +%s%N)
  echo "$(((e - s) / 1000)) $(cat "$tmp/rss")" | awk '{printf "%.3f %d\n", $1 / 1000, $2}'
}

# --- idle_pass_http
make_host "$tmp/h-http" "url = \"http://127.0.0.1:$http_port/\""
: >"$tmp/idle-http"
for _ in $(seq 20); do
  ms_rss "$tmp/h-http/opt/current/flotilla-agent" --config "$tmp/h-http/etc/agent.toml" run >>"$tmp/idle-http"
done
wall=$(cut -d' ' -f1 "$tmp/idle-http" | median)
rss=$(cut -d' ' -f2 "$tmp/idle-http" | sort -n | tail -1)
awk -v w="$wall" -v r="$rss" -v s="$server" 'BEGIN { printf "BENCH idle_pass_http wall_ms=%.1f peak_rss_mib=%.1f server=%s\n", w, r / 1024, s }'

# --- idle_pass_git
make_host "$tmp/h-git" "git = \"git://127.0.0.1:$git_port/fleet\""$'\n'"branch = \"main\""
git clone -q --bare "git://127.0.0.1:$git_port/fleet" "$tmp/mirror.git"
: >"$tmp/idle-git-agent"
: >"$tmp/idle-git-cli"
for _ in $(seq 10); do
  ms_rss "$tmp/h-git/opt/current/flotilla-agent" --config "$tmp/h-git/etc/agent.toml" run | cut -d' ' -f1 >>"$tmp/idle-git-agent"
  ms_rss git -C "$tmp/mirror.git" fetch -q origin '+refs/heads/main:refs/heads/main' | cut -d' ' -f1 >>"$tmp/idle-git-cli"
done
a=$(median <"$tmp/idle-git-agent")
g=$(median <"$tmp/idle-git-cli")
awk -v a="$a" -v g="$g" 'BEGIN { printf "BENCH idle_pass_git ratio_vs_git_fetch=%.2f agent_ms=%.1f git_fetch_ms=%.1f\n", a / g, a, g }'

# --- download_verify_512mib
big=$store/big.bin
size=$((512 * 1024 * 1024))
openssl rand -out "$big" "$size" 2>/dev/null || head -c "$size" /dev/urandom >"$big"
sha=$(openssl dgst -sha256 -r "$big" | cut -d' ' -f1)
url="http://127.0.0.1:$http_port/big.bin"
cat "$big" >/dev/null
load=$(cut -d' ' -f1 /proc/loadavg)
# run_dl OUT CMD...: "<wall ms> <peak rss KiB> <cpu s>", stderr of CMD in OUT
run_dl() {
  local out=$1 s e
  shift
  s=$(date +%s%N)
  /usr/bin/time -f '%M %U %S' -o "$tmp/rss" "$@" >/dev/null 2>"$out"
  e=$(date +%s%N)
  read -r rss u sy <"$tmp/rss"
  awk -v w="$(((e - s) / 1000))" -v r="$rss" -v u="$u" -v s="$sy" 'BEGIN { printf "%.3f %d %.2f\n", w / 1000, r, u + s }'
}
: >"$tmp/dl-rounds"
t0=$(cpu_ticks)
for _ in 1 2 3 4 5; do
  rm -rf "$tmp/dl" "$tmp/curl.out"
  read -r ta ra ca <<<"$(run_dl "$tmp/dl.err" "$ex/download" "$url" "$sha" "$size" "$tmp/dl")"
  [ -f "$tmp/dl/$sha" ] || { echo "download_verify_512mib: the agent's download failed: $(cat "$tmp/dl.err")" >&2; exit 1; }
  sync_s=$(sed -n 's/.*sync_s=\([0-9.]*\).*/\1/p' "$tmp/dl.err")
  rm -rf "$tmp/dl"
  read -r tc _ cc <<<"$(run_dl "$tmp/curl.err" curl -s -o "$tmp/curl.out" "$url")"
  rm -f "$tmp/curl.out"
  echo "$ta $ra $ca ${sync_s:-0} $tc $cc" >>"$tmp/dl-rounds"
done
steal=$(steal_pct "$t0" "$(cpu_ticks)")
rm -rf "$tmp/dl" "$tmp/curl.out" "$big"
awk -v load="$load" -v server="$server" -v steal="$steal" '
  function median(v, n,   i, j, t) {
    for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] > v[j]; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
    return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
  }
  { n++; a[n] = $1; r = ($2 > r ? $2 : r); ac[n] = $3; c[n] = $5; cc[n] = $6; q[n] = $1 / $5
    if (ba == "" || $1 < ba) { ba = $1; bs = $4 }
    if (bc == "" || $5 < bc) bc = $5 }
  END {
    printf "BENCH download_verify_512mib ratio_vs_curl=%.2f peak_rss_mib=%.1f agent_s=%.2f curl_s=%.2f sync_s=%.2f ratio_median=%.2f agent_cpu_s=%.2f curl_cpu_s=%.2f steal_pct=%s load=%s server=%s\n",
      ba / bc, r / 1024, ba / 1000, bc / 1000, bs, median(q, n), median(ac, n), median(cc, n), steal, load, server
  }' "$tmp/dl-rounds"
