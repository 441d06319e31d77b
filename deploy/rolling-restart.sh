#!/usr/bin/env bash
# The rolling-restart test: three instances behind deploy/nginx.conf on loopback, a fixed-rate
# page-view mix (oha, with latency correction), helpful votes (PUT) and interactions (POST)
# through nginx for the whole run, the instances restarted one after another for the whole
# run (SIGTERM, which drains; start; wait until /readyz says ready). A quiet run of the same
# load comes first. Prints one table: failed requests, votes answered against votes applied
# (the review's helpfulness before and after) and posts answered against rows added (the
# interactions counted before and after): a write lost or applied twice shows as a
# difference; requests nginx retried on another instance, and latency percentiles, quiet
# against restarting. Exits 1 if any request failed or a write was lost or applied twice.
#
#   DATABASE_URL=... deploy/rolling-restart.sh [READS_PER_SECOND] [QUIET_SECONDS]
#
# Needs nginx, oha (`cargo install oha`), psql and python3, and a loaded database whose
# products include ids 1 to 9999 (`atelier generate --scale 0.01` and `atelier load`).
set -euo pipefail
rate=${1:-400}
quiet_seconds=${2:-20}
votes_per_second=$((rate / 20))
: "${DATABASE_URL:?set DATABASE_URL to a loaded database}"
for tool in nginx oha psql python3; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || {
        echo "$tool is not installed (nginx: apt-get install nginx-light; oha: cargo install oha)" >&2
        exit 1
    }
done
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin atelier
bin=target/release/atelier
work=$(mktemp -d)
chmod 755 "$work"
ports=(4611 4612 4613)
lb=4610
cleanup() {
    for port in "${ports[@]}"; do
        [ -f "$work/pid-$port" ] && kill "$(cat "$work/pid-$port")" 2>/dev/null || true
    done
    [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

start_instance() { # port
    # Each instance its own snapshot directory, as the systemd unit gives it: a restart
    # restores the catalog written while the instance drained.
    "$bin" serve --listen "127.0.0.1:$1" --drain-delay-ms 6000 --sweep-period-s 0 \
        --snapshot-dir "$work/snapshots-$1" --snapshot-period-s 0 \
        --log-format json >>"$work/atelier-$1.log" 2>&1 &
    echo $! >"$work/pid-$1"
}
wait_ready() { # port; prints the seconds it took
    local started
    started=$(date +%s.%N)
    for _ in $(seq 1 6000); do
        kill -0 "$(cat "$work/pid-$1")" 2>/dev/null || {
            echo "the instance on $1 exited: $(tail -2 "$work/atelier-$1.log")" >&2
            return 1
        }
        [ "$(curl -s "http://127.0.0.1:$1/readyz" 2>/dev/null)" = ready ] && {
            echo "$(date +%s.%N) - $started" | bc
            return 0
        }
        sleep 0.1
    done
    echo "instance on $1 never became ready" >&2
    return 1
}

"$bin" migrate --quiet 2>/dev/null || "$bin" migrate
for port in "${ports[@]}"; do start_instance "$port"; done
for port in "${ports[@]}"; do wait_ready "$port" >/dev/null; done

# deploy/nginx.conf, with these instances upstream and a port of its own.
upstreams=$(printf '    server 127.0.0.1:%s max_fails=3 fail_timeout=5s;\\n' "${ports[@]}")
sed -e "/server 127.0.0.1:300[0-9]/d" -e "s|    least_conn;|    least_conn;\\n$upstreams|" \
    -e "s|listen 80;|listen 127.0.0.1:$lb;|" deploy/nginx.conf >"$work/atelier.conf"
cat >"$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
    # Which instances each request went to: more than one is a retry.
    log_format upstreams '\$request_method \$status \$upstream_addr';
    access_log $work/access.log upstreams;
    client_body_temp_path $work/client_body;
    proxy_temp_path $work/proxy;
    include $work/atelier.conf;
}
CONF
"$nginx_bin" -c "$work/nginx.conf"
sleep 1

review=$(psql "$DATABASE_URL" -Atc "SELECT min(id) FROM reviews WHERE NOT reported")
helpfulness() { psql "$DATABASE_URL" -Atc "SELECT helpfulness FROM reviews WHERE id = $review"; }
interactions() { psql "$DATABASE_URL" -Atc "SELECT count(*) FROM interactions"; }
id='[1-9][0-9]{0,3}'
# oha's regex URLs take the host's dots as they are (escaped, they go wrong).
reads_regex="http://127.0.0.1:$lb/(products/$id|products/$id/styles|products/$id/related|reviews\\?product_id=$id|reviews/meta\\?product_id=$id|qa/questions\\?product_id=$id)"

start_load() { # seconds label
    oha --no-tui -z "$1s" -q "$rate" --latency-correction -c 32 --output-format json \
        -H "Accept-Encoding: gzip" --rand-regex-url "$reads_regex" >"$work/reads-$2.json" 2>/dev/null &
    echo $! >"$work/load-reads"
    oha --no-tui -z "$1s" -q "$votes_per_second" -c 4 -m PUT --output-format json \
        "http://127.0.0.1:$lb/reviews/$review/helpful" >"$work/votes-$2.json" 2>/dev/null &
    echo $! >"$work/load-votes"
    oha --no-tui -z "$1s" -q "$votes_per_second" -c 4 -m POST --output-format json \
        -T application/json -d '{"element":"img","widget":"Overview","time":"t"}' \
        "http://127.0.0.1:$lb/interactions" >"$work/posts-$2.json" 2>/dev/null &
    echo $! >"$work/load-posts"
}
wait_load() {
    wait "$(cat "$work/load-reads")" "$(cat "$work/load-votes")" "$(cat "$work/load-posts")" || true
}

rows=()
summarize() { # run label before after posts_before posts_after
    local retried
    retried=$(grep -c ', ' "$work/access.log" || true)
    : >"$work/access.log"
    kill -USR1 "$(cat "$work/nginx.pid")"
    rows+=("$(python3 - "$work/reads-$1.json" "$work/votes-$1.json" "$work/posts-$1.json" \
        "$2" "$3" "$4" "$retried" "$work/verdict" "$5" "$6" <<'PY'
import json, sys
reads, votes, posts = (json.load(open(p)) for p in sys.argv[1:4])
label, before, after, retried = sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
posts_added = int(sys.argv[10]) - int(sys.argv[9])
# Requests still in flight when a run's time is up are cut off by oha, not failed by the
# server: counted apart (a vote cut off may have been applied, unanswered).
CUT = "aborted due to deadline"
def tally(run, ok):
    codes = run.get("statusCodeDistribution", {})
    errors = run.get("errorDistribution", {})
    good = sum(n for c, n in codes.items() if int(c) == ok)
    failed = sum(codes.values()) - good + sum(n for e, n in errors.items() if e != CUT)
    return good, failed, errors.get(CUT, 0)
read_ok, read_failed, _ = tally(reads, 200)
vote_ok, vote_failed, vote_cut = tally(votes, 204)
post_ok, post_failed, post_cut = tally(posts, 201)
added = after - before
# Every vote and post answered was applied once (rows counted in the database); one cut off
# may have been applied, unanswered.
sound = (read_failed == 0 and vote_failed == 0 and post_failed == 0
         and vote_ok <= added <= vote_ok + vote_cut
         and post_ok <= posts_added <= post_ok + post_cut)
if not sound:
    open(sys.argv[8], "a").write(label + "\n")
p = reads["latencyPercentiles"]
ms = lambda k: f'{p[k] * 1000:.2f} ms'
print(f'| {label} | {read_ok} | {read_failed} | {vote_ok} | {vote_failed} | {vote_cut} | {added} '
      f'| {post_ok} | {post_failed} | {posts_added} | {retried} '
      f'| {ms("p50")} | {ms("p90")} | {ms("p99")} | {ms("p99.9")} |')
PY
)")
}

echo "== quiet: ${quiet_seconds} s at $rate reads/s and $votes_per_second votes/s" >&2
before=$(helpfulness)
posts_before=$(interactions)
start_load "$quiet_seconds" quiet
wait_load
summarize quiet quiet "$before" "$(helpfulness)" "$posts_before" "$(interactions)"

restart_seconds=60
echo "== restarting the instances one after another under the same load (${restart_seconds} s)" >&2
before=$(helpfulness)
posts_before=$(interactions)
start_load "$restart_seconds" restarts
load_started=$(date +%s)
sleep 2
ready_times=()
n=0
# Restarts for the whole run, but none that could still be under way when the load ends.
while [ $(($(date +%s) - load_started)) -lt $((restart_seconds - 12)) ]; do
    port=${ports[$((n % ${#ports[@]}))]}
    pid=$(cat "$work/pid-$port")
    kill -TERM "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    start_instance "$port"
    ready_times+=("$(wait_ready "$port")")
    echo "  instance $port restarted, ready after ${ready_times[-1]} s" >&2
    # nginx counts an instance whose connections failed (while it stopped) as down for
    # fail_timeout (5 s in deploy/nginx.conf) after its last failure: stopping the next one
    # sooner can leave every instance counted down at once, and nginx then answers 502.
    sleep 5
    n=$((n + 1))
done
wait_load
summarize restarts "rolling restart" "$before" "$(helpfulness)" "$posts_before" "$(interactions)"
restored=$(cat "$work"/atelier-*.log | grep -c 'catalog restored from a snapshot' || true)

echo
echo "$(date -u +%F), $(nproc) cores, $rate reads/s, $votes_per_second votes/s and $votes_per_second posts/s through nginx to 3 instances, drain delay 6 s (past nginx's 5 s upstream keepalive); $n restarts ($restored from a snapshot), each ready after: ${ready_times[*]} s"
echo "| run | reads 200 | reads failed | votes 204 | votes failed | votes cut off at the end | helpfulness added | posts 201 | posts failed | rows added | retried by nginx | p50 | p90 | p99 | p99.9 |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
if [ -s "$work/verdict" ]; then
    echo "FAILED: $(tr '\n' ' ' <"$work/verdict")" >&2
    exit 1
fi
