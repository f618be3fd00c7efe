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
# Each connector in its own session, so Ctrl-C reaches only this script, which
# then sends each connector exactly one SIGTERM: a second signal would make a
# connector exit without finishing its in-flight work.
setsid "$bin/website-monitor-sink" --config "$config" &
sink=$!
setsid "$bin/website-monitor-source" --config "$config" &
source=$!
stopped=0
stop() {
  [ "$stopped" = 1 ] && return
  stopped=1
  kill -TERM "$source" "$sink" 2>/dev/null || true
}
trap stop INT TERM
echo "source pid $source, sink pid $sink; metrics on 127.0.0.1:9464 and 127.0.0.1:9465; Ctrl-C stops both" >&2
# Whichever connector ends first (on its own, or after Ctrl-C), stop the other
# too; then collect both exit codes. `wait` returns early (>128) when a trapped
# signal arrives, so each process is waited for until it is really gone.
status=0
wait -n "$source" "$sink" || true
stop
for pid in "$source" "$sink"; do
  code=0
  while :; do
    wait "$pid" && code=0 || code=$?
    kill -0 "$pid" 2>/dev/null || break
  done
  [ "$code" -eq 0 ] || status=$code
done
exit "$status"
