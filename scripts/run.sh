#!/usr/bin/env bash
# Runs both connectors in the foreground with one config file; Ctrl-C stops both.
set -euo pipefail
config=${1:-connector.toml}
root=$(cd "$(dirname "$0")/.." && pwd)
bin="${CARGO_TARGET_DIR:-$root/target}/debug"
if [ ! -f "$config" ]; then
  echo "config file $config not found" >&2
  exit 2
fi
"$bin/website-monitor-sink" --config "$config" &
sink=$!
"$bin/website-monitor-source" --config "$config" &
source=$!
stop() {
  kill -TERM "$source" "$sink" 2>/dev/null || true
}
trap stop INT TERM
echo "source pid $source, sink pid $sink; metrics on 127.0.0.1:9464 and 127.0.0.1:9465; Ctrl-C stops both" >&2
status=0
wait "$source" || status=$?
wait "$sink" || status=$?
# If one exits on its own, stop the other too.
stop
exit "$status"
