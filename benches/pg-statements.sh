#!/usr/bin/env bash
# Where PostgreSQL's time goes under the mix with 5% writes: sets log_min_duration_statement
# to 0 for SECONDS of benches/wrk-writes.lua against a running atelier, then sums the logged
# durations by statement (parse, bind and execute apart) and prints the heaviest. Needs a
# superuser DATABASE_URL (ALTER SYSTEM), the server's log file (PGLOG: where `pg_ctl -l` or
# the logging collector writes), wrk and python3.
#
#   DATABASE_URL=... PGLOG=/var/tmp/atelier/pg.log benches/pg-statements.sh http://127.0.0.1:3000 [SECONDS]
#
# Ids are those of the last tenth of the catalog, as in benches/write-cost.sh, unless FIRST and
# COUNT say otherwise.
set -euo pipefail
url=${1:?usage: pg-statements.sh URL [SECONDS]}
seconds=${2:-5}
: "${DATABASE_URL:?set DATABASE_URL to the database the server uses (a superuser)}"
: "${PGLOG:?set PGLOG to the PostgreSQL server log file}"
cd "$(dirname "$0")/.."
max_id=$(psql "$DATABASE_URL" -Atc "SELECT max(id) FROM products")
reset() { psql "$DATABASE_URL" -qc "ALTER SYSTEM RESET log_min_duration_statement" -c "SELECT pg_reload_conf()" >/dev/null; }
trap reset EXIT
from=$(($(wc -l <"$PGLOG") + 1))
psql "$DATABASE_URL" -qc "ALTER SYSTEM SET log_min_duration_statement = 0" -c "SELECT pg_reload_conf()" >/dev/null
FIRST=${FIRST:-$((max_id - max_id / 10))} COUNT=${COUNT:-$((max_id / 10))} \
    wrk -t2 -c64 -d"${seconds}s" -s benches/wrk-writes.lua "$url" | grep -E "Requests/sec"
reset
tail -n +"$from" "$PGLOG" | python3 -c '
import collections, re, sys
entries = re.split(r"\n(?=\d{4}-\d\d-\d\d )", sys.stdin.read())
total = collections.defaultdict(lambda: [0, 0.0])
for e in entries:
    m = re.search(r"duration: ([\d.]+) ms  (parse|bind|execute) [^:]*: (.*)", e, re.S)
    if m:
        t = total[(m.group(2), " ".join(m.group(3).split())[:100])]
        t[0] += 1
        t[1] += float(m.group(1))
whole = sum(t[1] for t in total.values()) or 1
print(f"{whole:.0f} ms of statements logged")
for (phase, sql), (n, ms) in sorted(total.items(), key=lambda kv: -kv[1][1])[:12]:
    print(f"{ms / whole * 100:5.1f}%  {ms / n:7.3f} ms x {n:6d}  {phase:7s} {sql}")
'
