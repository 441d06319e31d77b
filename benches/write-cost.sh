#!/usr/bin/env bash
# What a write costs, in CPU: runs the product-page mix with 5% writes (benches/wrk-writes.lua)
# against a running atelier for SECONDS, and divides the CPU time PostgreSQL's and atelier's
# processes used by the writes that were made (counted in change_log). Run on the machine of
# both, as root or as the user that owns them.
#
#   DATABASE_URL=... benches/write-cost.sh http://127.0.0.1:3000 [SECONDS]
#
# Ids are those of the last tenth of the catalog, as in benches/compare.sh's workload c, unless
# FIRST and COUNT say otherwise (FIRST=1 COUNT=100000: the first tenth).
set -euo pipefail
url=${1:?usage: write-cost.sh URL [SECONDS]}
seconds=${2:-10}
: "${DATABASE_URL:?set DATABASE_URL to the database the server uses}"
cd "$(dirname "$0")/.."

ticks() { # CPU clock ticks used so far by the processes named $1
    # Each one's own time and that of its children that have exited: a backend that exits
    # during the run leaves its time in the postmaster's (utime, stime, cutime, cstime).
    local total=0 pid
    for pid in $(pgrep -x "$1" || true); do
        read -r -a stat <"/proc/$pid/stat" 2>/dev/null || continue
        total=$((total + stat[13] + stat[14] + stat[15] + stat[16]))
    done
    echo "$total"
}

max_id=$(psql "$DATABASE_URL" -Atc "SELECT max(id) FROM products")
seq_before=$(psql "$DATABASE_URL" -Atc "SELECT coalesce(max(seq), 0) FROM change_log")
pg_before=$(ticks postgres)
atelier_before=$(ticks atelier)
out=$(FIRST=${FIRST:-$((max_id - max_id / 10))} COUNT=${COUNT:-$((max_id / 10))} \
    wrk -t2 -c64 -d"${seconds}s" --latency -s benches/wrk-writes.lua "$url")
pg_after=$(ticks postgres)
atelier_after=$(ticks atelier)
writes=$(psql "$DATABASE_URL" -Atc \
    "SELECT count(DISTINCT xid) FROM change_log WHERE seq > $seq_before")
hz=$(getconf CLK_TCK)
rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
p99=$(awk '$1=="99%" {print $2}' <<<"$out")
awk -v pg=$((pg_after - pg_before)) -v at=$((atelier_after - atelier_before)) \
    -v w="$writes" -v hz="$hz" -v s="$seconds" -v rps="$rps" -v p99="$p99" 'BEGIN {
    printf "%s requests/s (p99 %s), %d write transactions in %d s (%.0f/s)\n", rps, p99, w, s, w / s
    printf "PostgreSQL: %.2f cores busy, %.2f ms CPU a write\n", pg / hz / s, w ? pg / hz * 1000 / w : 0
    printf "atelier:    %.2f cores busy (reads and writes)\n", at / hz / s
}'
