#!/usr/bin/env bash
# What a streaming replica takes off the primary: the CPU the primary and the replica spend
# (a) on an instance's warm-up from scratch, and (b) per write and per 1,000 requests/s while
# the product-page mix with 5% writes (benches/wrk-writes.lua) goes through one instance and
# FOLLOWERS (3) others follow, refreshing from their change feeds (each re-reads what every
# change made stale: what replicas take off the primary). Each is run without
# `--replica-url`, then with it. Run on the machine of the servers, as root or as the user
# that owns them.
#
#   DATABASE_URL=... REPLICA_URL=... benches/replicas.sh [CACHE_MB] [SECONDS] [WRITES_DATABASE_URL]
#
# REPLICA_URL names a hot standby of DATABASE_URL's server in key=value form
# (`hot_standby_feedback = on`, so that a long scan is not cancelled). CACHE_MB (6000) must
# hold the whole catalog for (a); 0 skips (a).
# The writes (b) go to WRITES_DATABASE_URL (default DATABASE_URL) and its REPLICA_URL twin
# (same database name), for SECONDS (20); a small database keeps their warm-ups short.
set -euo pipefail
cache_mb=${1:-6000}
seconds=${2:-20}
: "${DATABASE_URL:?set DATABASE_URL to the primary}"
: "${REPLICA_URL:?set REPLICA_URL to a hot standby of it}"
writes_url=${3:-$DATABASE_URL}
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/atelier
hz=$(getconf CLK_TCK)

# The postmaster of the server `$1` names: the parent of its checkpointer.
postmaster() {
    local child
    child=$(psql "$1" -Atc "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'")
    ps -o ppid= -p "$child" | tr -d ' '
}

# CPU clock ticks a server has used: its postmaster's own and its reaped children's, plus
# every live child's.
ticks() {
    local total pid
    read -r -a stat <"/proc/$1/stat"
    total=$((stat[13] + stat[14] + stat[15] + stat[16]))
    for pid in $(pgrep -P "$1" || true); do
        read -r -a stat <"/proc/$pid/stat" 2>/dev/null || continue
        total=$((total + stat[13] + stat[14]))
    done
    echo "$total"
}

primary=$(postmaster "$DATABASE_URL")
replica=$(postmaster "$REPLICA_URL")
replica_of() { # $1 with its host, port and user taken from REPLICA_URL (key=value form)
    local db
    db=$(psql "$1" -Atc "SELECT current_database()")
    echo "$REPLICA_URL dbname=$db"
}

pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
trap stop_all EXIT

serve() { # PORT DATABASE_URL CACHE_MB [REPLICA_URL]: starts an instance in the background
    local args=(serve --listen "127.0.0.1:$1" --cache-mb "$3" --sweep-period-s 0
        --drain-delay-ms 0 --log-format json)
    [ -n "${4:-}" ] && args+=(--replica-url "$4")
    DATABASE_URL=$2 "$bin" "${args[@]}" >/dev/null 2>&1 &
    pids+=($!)
}

until_ready() {
    until [ "$(curl -s "http://127.0.0.1:$1/readyz" || true)" = ready ]; do sleep 0.2; done
}

[ "$cache_mb" = 0 ] || echo "(a) a warm-up from scratch, ${cache_mb} MB"
[ "$cache_mb" = 0 ] || printf '%-14s %8s %16s %16s\n' "" "ready" "primary CPU" "replica CPU"
for mode in primary replica; do
    [ "$cache_mb" = 0 ] && break
    p0=$(ticks "$primary") r0=$(ticks "$replica") t0=$(date +%s.%N)
    if [ $mode = replica ]; then
        serve 3101 "$DATABASE_URL" "$cache_mb" "$(replica_of "$DATABASE_URL")"
    else
        serve 3101 "$DATABASE_URL" "$cache_mb"
    fi
    until_ready 3101
    t1=$(date +%s.%N) p1=$(ticks "$primary") r1=$(ticks "$replica")
    stop_all
    awk -v m="$mode" -v t="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" -v p=$((p1 - p0)) -v r=$((r1 - r0)) \
        -v hz="$hz" 'BEGIN { printf "%-14s %7.1fs %15.1fs %15.1fs\n", "from the " m, t, p / hz, r / hz }'
done

echo
followers=${FOLLOWERS:-3}
echo "(b) the mix with 5% writes for ${seconds} s through one instance, $followers following"
printf '%-14s %11s %7s %18s %18s %16s %16s\n' "" "requests/s" "writes" "primary CPU/write" "replica CPU/write" "primary/1k rps" "replica/1k rps"
max_id=$(psql "$writes_url" -Atc "SELECT max(id) FROM products")
for mode in primary replica; do
    replica_url=""
    [ $mode = replica ] && replica_url=$(replica_of "$writes_url")
    for port in $(seq 3102 $((3102 + followers))); do
        serve "$port" "$writes_url" 1024 "$replica_url"
    done
    for port in $(seq 3102 $((3102 + followers))); do
        until_ready "$port"
    done
    seq0=$(psql "$writes_url" -Atc "SELECT coalesce(max(seq), 0) FROM change_log")
    p0=$(ticks "$primary") r0=$(ticks "$replica")
    out=$(FIRST=$((max_id - max_id / 10)) COUNT=$((max_id / 10)) \
        wrk -t2 -c32 -d"${seconds}s" -s benches/wrk-writes.lua http://127.0.0.1:3102)
    # The follower's refreshes of the last writes.
    sleep 1
    p1=$(ticks "$primary") r1=$(ticks "$replica")
    writes=$(psql "$writes_url" -Atc \
        "SELECT count(DISTINCT xid) FROM change_log WHERE seq > $seq0")
    metrics=$(for port in $(seq 3103 $((3102 + followers))); do
        curl -s "http://127.0.0.1:$port/metrics"
    done)
    reads=$(awk '/^atelier_replica_reads_total/ {s += $2} END {print s + 0}' <<<"$metrics")
    fallbacks=$(awk '/^atelier_replica_primary_reads_total/ {s += $2} END {print s + 0}' <<<"$metrics")
    stop_all
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    # CPU per 1,000 requests/s: cores busy (CPU seconds over the run's seconds, the second
    # after it included) for each 1,000 requests/s served.
    awk -v m="$mode" -v rps="$rps" -v w="$writes" -v p=$((p1 - p0)) -v r=$((r1 - r0)) \
        -v hz="$hz" -v s="$seconds" -v reads="$reads" -v fallbacks="$fallbacks" 'BEGIN {
        printf "%-14s %11s %7d %16.2fms %16.2fms %11.3f cores %11.3f cores", "from the " m, rps, w,
            p / hz * 1000 / w, r / hz * 1000 / w, p / hz / (s + 1) / (rps / 1000), r / hz / (s + 1) / (rps / 1000)
        if (m == "replica") printf "   (the followers read the replica %d times, the primary %d)", reads, fallbacks
        printf "\n"
    }'
done
