#!/usr/bin/env bash
# The load benchmark, side by side in one run: the constant-body ceiling (examples/
# constant_body.rs), nginx serving a static body of the same size, and atelier precomputed
# (`--compress all`, the default, and `--compress dense`; and the default again with
# `--engine hyper`, hyper alone without the fast lane), on demand and without a cache, each
# under the same workloads:
#   a. the product-page mix over random ids in the last 10% of the catalog (and, for the
#      ceiling and atelier precomputed, each of its six GET endpoints alone);
#   b. the same mix over uniform random ids;
#   c. the mix of a with 5% writes (helpful votes, new reviews, new answers);
#   d. a fixed 10,000 requests/s for 30 s with latency correction, over random products of
#      the last tenth (product, styles and meta; needs `oha`: `cargo install oha`; skipped
#      without it).
# SETUPS="ceiling nginx precomputed precomputed-hyper precomputed-dense on-demand no-cache"
# (the default) picks the servers.
# ROUNDS=N (with the ceiling and precomputed among SETUPS) then measures a, b and d N more
# times, the ceiling and atelier precomputed in turn each round, both servers up, and prints a
# second table of each round's shares and their median: the host's drift over the minutes
# between the ceiling's first figures and atelier's lands on both sides of a pair.
# Requests ask for gzip as browsers do (ACCEPT_ENCODING, default "gzip, deflate, br"; set it
# empty for plain bodies). LOCK_MEMORY=1 runs atelier with --lock-memory (root, or an
# unlimited memlock limit).
# Prints one table (and, with ROUNDS, the rounds' table). Needs wrk and nginx (apt-get install wrk nginx-light) and DATABASE_URL
# naming a loaded database (which workload c writes to).
#
#   DATABASE_URL=... benches/compare.sh [SECONDS] [CACHE_MB]
#
# Everything runs on this machine, load generator included: figures are for comparing rows of
# one run, not absolute capacity.
set -euo pipefail
seconds=${1:-15}
cache_mb=${2:-512}
export ACCEPT_ENCODING=${ACCEPT_ENCODING-gzip, deflate, br}
# SETUPS picks the servers to run (all by default).
SETUPS=${SETUPS:-ceiling nginx precomputed precomputed-hyper precomputed-dense on-demand no-cache}
lock_memory=
[ "${LOCK_MEMORY:-0}" = 0 ] || lock_memory=--lock-memory
[ -n "$ACCEPT_ENCODING" ] || unset ACCEPT_ENCODING
: "${DATABASE_URL:?set DATABASE_URL to a loaded database}"
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install wrk" >&2; exit 1; }
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "nginx is not installed: apt-get install nginx-light" >&2; exit 1; }
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin atelier --example constant_body
bin=target/release/atelier
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

max_id=$(psql "$DATABASE_URL" -Atc "SELECT max(id) FROM products" 2>/dev/null || true)
if [ -z "$max_id" ]; then
    echo "cannot read products from DATABASE_URL (is psql installed, and the database loaded?)" >&2
    exit 1
fi
tail_first=$((max_id - max_id / 10))
tail_count=$((max_id / 10))

wait_ready() {
    for _ in $(seq 1 900); do
        [ "$(curl -s "$1/readyz" 2>/dev/null)" = ready ] && return 0
        sleep 1
    done
    echo "$1 never became ready" >&2
    return 1
}

# oha draws each URL from a regex: ids of the last tenth, for a catalog of ids 1 to about a
# power of ten (as generated and real sets are): 9 followed by the rest of the digits.
tail_regex="9[0-9]{$((${#max_id} - 2))}"

rows=()
rounds=()
# What the last run_wrk measured (requests/s) and run_fixed's p99, in milliseconds.
last_rps=
last_p99_ms=
run_wrk() { # name workload url script first count [endpoint]
    local out
    out=$(ONLY=${7:-0} FIRST=$5 COUNT=$6 wrk -t2 -c64 -d"${seconds}s" --latency -s "benches/$4" "$3")
    local rps p50 p99
    # Every read must be a 200: a fast error is not a result. (Writes may meet an id that
    # is not there: a 404 is an answer of the contract.)
    if [ "$4" = wrk-mix.lua ] && grep -q "Non-2xx" <<<"$out"; then
        rows+=("$1|$2|FAILED: $(grep Non-2xx <<<"$out" | tr -s ' ')||")
        echo "  $1, $2: $(grep Non-2xx <<<"$out")" >&2
        return
    fi
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    last_rps=$rps
    p50=$(awk '$1=="50%" {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    rows+=("$1|$2|$rps|$p50|$p99")
    echo "  $1, $2: $rps requests/s, p50 $p50, p99 $p99" >&2
}

run_fixed() { # name url
    if ! command -v oha >/dev/null; then
        rows+=("$1|d (10k/s fixed)|skipped: no oha||")
        last_p99_ms=
        return
    fi
    local out
    # oha asks for gzip unless told otherwise; its regex URLs take dots literally.
    out=$(oha --no-tui -z 30s -q 10000 --latency-correction -c 64 \
        -H "Authorization: bench" -H "Accept-Encoding: ${ACCEPT_ENCODING:-identity}" \
        --rand-regex-url "$2/(products/$tail_regex|products/$tail_regex/styles|reviews/meta\\?product_id=$tail_regex)" \
        2>/dev/null)
    # Every answer must be a 200: a fast error is not a result.
    if awk '/Status code distribution/ {on = 1; next} /Error distribution/ {on = 0}
            on && /\[/ && !/\[200\]/ {bad = 1} END {exit !bad}' <<<"$out"; then
        rows+=("$1|d (10k/s fixed)|FAILED: not all 200|$(grep -A4 'Status code' <<<"$out" | tr '\n' ' ')|")
        last_p99_ms=
        return
    fi
    local p50 p90 p99 p999 rps
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '/50.00%/ {print $3" "$4}' <<<"$out")
    p90=$(awk '/90.00%/ {print $3" "$4}' <<<"$out")
    p99=$(awk '/99.00%/ {print $3" "$4}' <<<"$out")
    p999=$(awk '/99.90%/ {print $3" "$4}' <<<"$out")
    # oha prints "99.00% in 0.0012 secs" (or ms, µs): the p99 in milliseconds.
    last_p99_ms=$(awk '/99.00%/ {v = $3; if ($4 ~ /^sec/) v *= 1000; else if ($4 ~ /^(us|µs)/) v /= 1000; print v}' <<<"$out" | head -1)
    rows+=("$1|d (10k/s fixed)|$rps|$p50|$p99 (p90 $p90, p99.9 $p999)")
}

# The six endpoints of the mix, each alone (workload a).
endpoints=(product styles related reviews meta questions)
measure_endpoints() { # name url
    for n in 1 2 3 4 5 6; do
        run_wrk "$1" "a: ${endpoints[$((n - 1))]}" "$2" wrk-mix.lua "$tail_first" "$tail_count" "$n"
    done
}

# A server that answers every path with one body: the read-only workloads and the fixed rate.
measure_static() { # name url
    for w in "a|$tail_first|$tail_count" "b|1|$max_id"; do
        IFS='|' read -r workload first count <<<"$w"
        run_wrk "$1" "$workload" "$2" wrk-mix.lua "$first" "$count"
    done
    run_fixed "$1" "$2"
}

# ROUNDS more measures of a, b and d, the ceiling's and atelier's in turn (the ceiling first in
# odd rounds, atelier first in even ones, so that a drift within a pair falls on each side
# alike): a row of shares a round (a failed read leaves its share empty).
measure_rounds() { # ceiling_url atelier_url
    local r w first count c_rps a_rps c_p99 a_p99 side
    local kept=("${rows[@]}")
    for r in $(seq 1 "${ROUNDS:-0}"); do
        local row="$r" order="ceiling atelier"
        [ $((r % 2)) = 1 ] || order="atelier ceiling"
        for w in "a|$tail_first|$tail_count" "b|1|$max_id"; do
            IFS='|' read -r workload first count <<<"$w"
            for side in $order; do
                last_rps=
                if [ "$side" = ceiling ]; then
                    run_wrk "ceiling, round $r" "$workload" "$1" wrk-mix.lua "$first" "$count"
                    c_rps=$last_rps
                else
                    run_wrk "atelier precomputed, round $r" "$workload" "$2" wrk-mix.lua "$first" "$count"
                    a_rps=$last_rps
                fi
            done
            row+="|$c_rps|$a_rps|$(awk -v c="$c_rps" -v x="$a_rps" 'BEGIN {if (c > 0 && x > 0) printf "%.0f%%", 100 * x / c}')"
        done
        for side in $order; do
            last_p99_ms=
            if [ "$side" = ceiling ]; then
                run_fixed "ceiling, round $r" "$1"
                c_p99=$last_p99_ms
            else
                run_fixed "atelier precomputed, round $r" "$2"
                a_p99=$last_p99_ms
            fi
        done
        row+="|$c_p99|$a_p99|$(awk -v c="$c_p99" -v x="$a_p99" 'BEGIN {if (c > 0 && x > 0) printf "%.2fx", x / c}')"
        rounds+=("$row")
    done
    # The rounds' figures are their own table's, not the setups'.
    rows=("${kept[@]}")
}

body_size=1400
wanted() { [[ " $SETUPS " == *" $1 "* ]]; }
if wanted ceiling; then
echo "== constant-body ceiling" >&2
target/release/examples/constant_body 127.0.0.1:4501 "$body_size" 2>/dev/null &
pids+=($!)
sleep 1
measure_static "ceiling (constant body)" http://127.0.0.1:4501
measure_endpoints "ceiling (constant body)" http://127.0.0.1:4501
fi

if wanted nginx; then
echo "== nginx, static body" >&2
mkdir -p "$work/www"
head -c "$body_size" /dev/zero | tr '\0' 'x' >"$work/www/body.json"
# nginx's workers drop root: they must be able to read the body (mktemp -d is private).
chmod 755 "$work" "$work/www"
chmod 644 "$work/www/body.json"
cat >"$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    server {
        listen 127.0.0.1:4502;
        root $work/www;
        location / { try_files /body.json =404; default_type application/json; }
    }
}
CONF
"$nginx_bin" -c "$work/nginx.conf"
sleep 1
measure_static "nginx (static body)" http://127.0.0.1:4502
kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
fi

for setup in "precomputed|all|$cache_mb|all|fast" "precomputed hyper|all|$cache_mb|all|hyper" \
    "precomputed dense|all|$cache_mb|dense|fast" \
    "on demand|none|$cache_mb|all|fast" "no cache|none|0|all|fast"; do
    IFS='|' read -r label precompute mb compress engine <<<"$setup"
    wanted "${label// /-}" || continue
    echo "== atelier, $label" >&2
    "$bin" serve --listen 127.0.0.1:4503 --precompute "$precompute" --cache-mb "$mb" \
        --compress "$compress" --engine "$engine" --sweep-period-s 0 $lock_memory \
        2>"$work/atelier.log" &
    pid=$!
    pids+=("$pid")
    started=$(date +%s)
    wait_ready http://127.0.0.1:4503
    echo "  ready after $(($(date +%s) - started)) s, $(($(ps -o rss= -p "$pid") / 1024)) MiB resident" >&2
    # The read-only workloads first, in the ceiling's order: c's writes leave PostgreSQL
    # checkpointing and vacuuming on the same two cores for a while, which reads measured
    # after it would pay for (the endpoints lost about 10 points that way, docs/benchmarks.md).
    for w in "a|wrk-mix.lua|$tail_first|$tail_count" "b|wrk-mix.lua|1|$max_id"; do
        IFS='|' read -r name script first count <<<"$w"
        run_wrk "atelier $label" "$name" http://127.0.0.1:4503 "$script" "$first" "$count"
    done
    run_fixed "atelier $label" http://127.0.0.1:4503
    if [ "$precompute" = all ]; then
        measure_endpoints "atelier $label" http://127.0.0.1:4503
    fi
    if [ "$label" = precomputed ] && wanted ceiling; then
        measure_rounds http://127.0.0.1:4501 http://127.0.0.1:4503
    fi
    run_wrk "atelier $label" "c (5% writes)" http://127.0.0.1:4503 wrk-writes.lua "$tail_first" "$tail_count"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
done

echo
echo "$(nproc) cores, $(date -u +%F), $seconds s a workload, wrk -t2 -c64, catalog of $max_id products, --cache-mb $cache_mb${lock_memory:+ $lock_memory}, Accept-Encoding: ${ACCEPT_ENCODING:-(none)}"
printf '| %-26s | %-16s | %12s | %10s | %10s |\n' setup workload requests/s p50 p99
printf '|%s|%s|%s|%s|%s|\n' "----------------------------" "------------------" "--------------" "------------" "------------"
for r in "${rows[@]}"; do
    IFS='|' read -r a b c d e <<<"$r"
    printf '| %-26s | %-16s | %12s | %10s | %10s |\n' "$a" "$b" "$c" "$d" "$e"
done
if [ ${#rounds[@]} -gt 0 ]; then
    echo
    echo "Alternated rounds, ceiling and atelier precomputed in turn (d: p99 in ms):"
    printf '| %5s | %9s | %9s | %5s | %9s | %9s | %5s | %7s | %7s | %6s |\n' round "a ceil" "a atel" share "b ceil" "b atel" share "d ceil" "d atel" ratio
    for r in "${rounds[@]}"; do
        IFS='|' read -r n ac aa as bc ba bs dc da dr <<<"$r"
        printf '| %5s | %9s | %9s | %5s | %9s | %9s | %5s | %7s | %7s | %6s |\n' "$n" "$ac" "$aa" "$as" "$bc" "$ba" "$bs" "$dc" "$da" "$dr"
    done
    median() { grep . | sort -n | awk '{v[NR] = $1} END {if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)}'; }
    echo "median share: a $(printf '%s\n' "${rounds[@]}" | cut -d'|' -f4 | tr -d '%' | median)%," \
        "b $(printf '%s\n' "${rounds[@]}" | cut -d'|' -f7 | tr -d '%' | median)%," \
        "d p99 $(printf '%s\n' "${rounds[@]}" | cut -d'|' -f10 | tr -d 'x' | median)x the ceiling's"
fi
