#!/usr/bin/env bash
# Where the CPU of a load test goes, per request: the server's user and system time, the load
# generator's, and the whole machine's, over one wrk run of the product-page mix
# (benches/wrk-mix.lua). On a box where server, PostgreSQL and wrk share the cores, requests/s
# alone hides who got slower; this says how many microseconds of CPU each request cost whom.
#
#   benches/cpu-split.sh URL PID [SECONDS]
#   ACCEPT_ENCODING=gzip FIRST=900010 COUNT=100000 \
#     benches/cpu-split.sh http://127.0.0.1:3000 "$(pgrep -f 'atelier serve')" 8
#
# PID is the server's process; FIRST, COUNT, ONLY and ACCEPT_ENCODING go to the wrk script.
set -euo pipefail
url=${1:?usage: benches/cpu-split.sh URL PID [SECONDS]}
pid=${2:?the process id of the server}
seconds=${3:-8}
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
[ -r "/proc/$pid/stat" ] || { echo "no process $pid" >&2; exit 1; }
hz=$(getconf CLK_TCK)

# The server's user and system ticks (fields 14 and 15; the name field has no spaces here).
server_ticks() { awk '{ print $14, $15 }' "/proc/$pid/stat"; }
# Busy ticks of the whole machine: user nice system irq softirq steal.
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

read -r user0 sys0 < <(server_ticks)
all0=$(machine_ticks)
report=$(/usr/bin/time -f "wrk-cpu %U %S" \
  wrk -t2 -c64 -d"${seconds}s" -s benches/wrk-mix.lua "$url" 2>&1)
read -r user1 sys1 < <(server_ticks)
all1=$(machine_ticks)

requests=$(awk '/requests in/ { print $1 }' <<<"$report")
rate=$(awk '/^Requests\/sec/ { print $2 }' <<<"$report")
read -r wrk_user wrk_sys < <(awk '/^wrk-cpu/ { print $2, $3 }' <<<"$report")
errors=$(grep -E "Non-2xx|Socket errors" <<<"$report" || true)
[ -n "$requests" ] && [ "$requests" -gt 0 ] || { echo "$report" >&2; exit 1; }

awk -v n="$requests" -v hz="$hz" -v rate="$rate" \
  -v su=$((user1 - user0)) -v ss=$((sys1 - sys0)) -v all=$((all1 - all0)) \
  -v wu="$wrk_user" -v ws="$wrk_sys" 'BEGIN {
    us = 1e6 / n
    printf "| requests/s | server user us/req | server sys us/req | wrk us/req | all CPU us/req |\n"
    printf "|---|---|---|---|---|\n"
    printf "| %.0f | %.2f | %.2f | %.2f | %.2f |\n", rate, su / hz * us, ss / hz * us, \
      (wu + ws) * us, all / hz * us
  }'
[ -z "$errors" ] || echo "$errors"
