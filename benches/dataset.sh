#!/usr/bin/env bash
# Benchmark of the data pipeline: generate a data set at SCALE, then load and index it into the
# database DATABASE_URL names, replacing what it holds. Prints wall time and peak RSS of each
# phase and the database's size.
#
#   export DATABASE_URL=postgres://postgres@127.0.0.1:5432/atelier   # its data is replaced
#   benches/dataset.sh 0.1            # about 7M rows
#   benches/dataset.sh 1.0 /big/disk  # the full 70M rows (about 6 GB of CSV)
set -euo pipefail
scale=${1:-0.1}
work=${2:-${TMPDIR:-/tmp}}
if [ -z "${DATABASE_URL:-}" ]; then
    echo "benches/dataset.sh loads into the database DATABASE_URL names (replacing its data):" >&2
    echo "set it, e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/atelier" >&2
    exit 2
fi
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/atelier
dir="$work/atelier-bench-$scale"
rm -rf "$dir"
trap 'rm -rf "$dir"' EXIT

echo "== generate --scale $scale"
/usr/bin/time -f "generate: %e s wall, peak RSS %M KB" "$bin" generate --scale "$scale" --out "$dir" --quiet
du -sh "$dir"
echo "== load (replacing what DATABASE_URL's database holds)"
/usr/bin/time -f "load: %e s wall, peak RSS %M KB" "$bin" demo --data "$dir" --no-serve --replace --quiet
echo "database size: $(psql "$DATABASE_URL" -Atc 'SELECT pg_size_pretty(pg_database_size(current_database()))')"
