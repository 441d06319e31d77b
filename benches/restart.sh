#!/usr/bin/env bash
# Restart-to-ready: starts `atelier serve` from scratch (no snapshot: the warm-up scans the
# database), stops it (SIGTERM: it drains and writes its catalog snapshot), then starts it twice
# more from the snapshot, and prints one line per start: seconds from the process's start to
# /readyz answering "ready", resident memory then, how it got its catalog, and how long the
# stop took (drain plus snapshot) with the snapshot's size.
#
#   DATABASE_URL=... benches/restart.sh [CACHE_MB] [SNAPSHOT_DIR]
#
# The database must be migrated and loaded (benches/dataset.sh). CACHE_MB (6000) must hold the
# whole catalog for the figures to be the full catalog's. SNAPSHOT_DIR (a temporary
# directory, removed afterwards) needs room for two snapshots (about 7 GB at full scale).
set -euo pipefail
cache_mb=${1:-6000}
dir=${2:-}
: "${DATABASE_URL:?set DATABASE_URL to a migrated, loaded database}"
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/atelier
if [ -z "$dir" ]; then
    dir=$(mktemp -d)
    trap 'rm -rf "$dir"' EXIT
fi
rm -f "$dir/catalog.snapshot"
port=${PORT:-3190}
log=$(mktemp)

metric() { curl -s "http://127.0.0.1:$port/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }

start_and_stop() {
    local began ready pid how stopped
    began=$(date +%s.%N)
    "$bin" serve --listen "127.0.0.1:$port" --cache-mb "$cache_mb" --sweep-period-s 0 \
        --snapshot-dir "$dir" --snapshot-period-s 0 --drain-delay-ms 1000 \
        --log-format json >"$log" 2>&1 &
    pid=$!
    until [ "$(curl -s "http://127.0.0.1:$port/readyz" || true)" = ready ]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "the server stopped; its log:" >&2
            tail -20 "$log" >&2
            exit 1
        fi
        sleep 0.1
    done
    ready=$(date +%s.%N)
    if [ "$(metric atelier_snapshot_restored_total)" = 1 ]; then how=snapshot; else how=scan; fi
    printf '| %s | %.1f s | %d MiB | %s entries |' "$how" "$(echo "$ready - $began" | bc)" \
        "$(($(ps -o rss= -p "$pid") / 1024))" "$(metric atelier_cache_catalog_entries)"
    began=$(date +%s.%N)
    kill -TERM "$pid"
    wait "$pid"
    stopped=$(date +%s.%N)
    printf ' %.1f s | %d MiB |\n' "$(echo "$stopped - $began" | bc)" \
        "$(($(stat -c %s "$dir/catalog.snapshot") >> 20))"
}

echo "| catalog from | start to ready | resident | catalog | stop (1 s drain + snapshot) | snapshot |"
echo "|---|---|---|---|---|---|"
for _ in 1 2 3; do
    start_and_stop
done
rm -f "$log"
