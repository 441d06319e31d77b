#!/usr/bin/env bash
# Load benchmark: wrk against a running server with the product-page mix of benches/wrk-mix.lua.
# Warms the cache first (one pass over the id range), then measures hits.
#
#   benches/load.sh http://127.0.0.1:3000 [FIRST] [COUNT] [SECONDS] [CONNECTIONS]
set -euo pipefail
url=${1:-http://127.0.0.1:3000}
export FIRST=${2:-1} COUNT=${3:-1000}
seconds=${4:-20}
connections=${5:-64}
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install wrk" >&2; exit 1; }
echo "== warm-up: every resource of products $FIRST..$((FIRST + COUNT - 1))"
wrk -t2 -c16 -d"$((COUNT / 500 + 5))s" -s benches/wrk-mix.lua "$url" >/dev/null
echo "== measure: $seconds s, $connections connections"
wrk -t2 -c"$connections" -d"${seconds}s" --latency -s benches/wrk-mix.lua "$url"
