#!/usr/bin/env bash
# Benchmark of the data pipeline: generate a data set at SCALE, then load and index it into a
# private PostgreSQL cluster (or DATABASE_URL). Prints wall time per phase, rows/s, the peak
# RSS of each process and the database size.
#
#   benches/dataset.sh 0.1            # about 7M rows
#   benches/dataset.sh 1.0 /big/disk  # the full 70M rows (about 6 GB of CSV)
set -euo pipefail
scale=${1:-0.1}
work=${2:-${TMPDIR:-/tmp}}
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/atelier
dir="$work/atelier-bench-$scale"
rm -rf "$dir"

echo "== generate --scale $scale"
/usr/bin/time -f "generate: %e s wall, peak RSS %M KB" "$bin" generate --scale "$scale" --out "$dir" --quiet
du -sh "$dir"
echo "== load"
/usr/bin/time -f "load: %e s wall, peak RSS %M KB" "$bin" demo --data "$dir" --no-serve --quiet
rm -rf "$dir"
