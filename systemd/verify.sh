#!/usr/bin/env bash
# Checks the unit files with `systemd-analyze verify` (CI runs it): any warning fails, an
# unknown key included. The units name /usr/local/bin/atelier, which need not exist here: the
# copies checked name an executable that does.
set -euo pipefail
cd "$(dirname "$0")"
command -v systemd-analyze >/dev/null || { echo "systemd-analyze is missing: apt-get install systemd" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stand_in=$(command -v true)
for unit in atelier@.service atelier-migrate.service; do
    sed "s|/usr/local/bin/atelier|$stand_in|g" "$unit" >"$work/$unit"
done
out=$(cd "$work" && systemd-analyze verify ./atelier@.service ./atelier-migrate.service 2>&1) || { echo "$out" >&2; exit 1; }
if [ -n "$out" ]; then
    echo "$out" >&2
    exit 1
fi
echo "systemd units verified"
