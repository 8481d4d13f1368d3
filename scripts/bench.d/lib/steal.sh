# Sourced by the bench parts (not a part: scripts/bench runs bench.d/*.sh only).
# Steal is CPU time the hypervisor gave to other guests; on a shared VM it is
# the main noise in the timing figures, so they are printed with it.
#   t0=$(cpu_ticks); ...; steal_pct "$t0" "$(cpu_ticks)"   -> e.g. 3.2
# cpu_ticks: "steal total" from /proc/stat's cpu line.
cpu_ticks() { awk '/^cpu / { print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
# steal_pct BEFORE AFTER: stolen share of all CPU time in between, percent.
steal_pct() { awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.1f", 100 * (y[1] - x[1]) / (y[2] - x[2]) }'; }
