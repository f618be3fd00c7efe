#!/usr/bin/env bash
# make bench: builds the connectors in release mode, starts a one-worker nginx
# on 127.0.0.1 as the HTTP target, and runs the benchmark driver
# (bench/src/main.rs) against the local stack (`make up` runs first).
# Prints one table; writes target/bench/results.json. Never fails on a time.
#   WM_BENCH_ONLY=source,scale,million,sink,sink_keyless,resume,e2e,dataset   run only these
#   WM_BENCH_SCALE=0.2                    shrink every scenario (a quick try)
#   WM_BENCH_SINK_EXTRA='batch_size = 20000'  extra [sink] lines (experiments)
#   WM_BENCH_KEEP_DATASET=1               keep the dataset scenario's schema (drop it by hand)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd -P)
cd "$root"
ngx_dir=$root/.stack/nginx
port=${WM_BENCH_HTTP_PORT:-18080}
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$nginx_bin" ] || { echo "bench: nginx is missing: apt-get install nginx-light (scripts/stack.sh up installs it as root)" >&2; exit 1; }
command -v ab >/dev/null || { echo "bench: ab is missing: apt-get install apache2-utils" >&2; exit 1; }

mkdir -p "$ngx_dir/logs" "$ngx_dir/tmp"
cat > "$ngx_dir/nginx.conf" <<NGINX
worker_processes 1;
pid $ngx_dir/nginx.pid;
error_log $ngx_dir/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $ngx_dir/tmp;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$port backlog=4096;
    location / { default_type text/plain; return 200 "website-monitor bench target: ok\n"; }
  }
}
NGINX
stop_nginx() {
  if [ -f "$ngx_dir/nginx.pid" ]; then
    "$nginx_bin" -p "$ngx_dir" -c "$ngx_dir/nginx.conf" -s quit 2>/dev/null || true
    sleep 0.5
  fi
}
stop_nginx
"$nginx_bin" -p "$ngx_dir" -c "$ngx_dir/nginx.conf"
trap stop_nginx EXIT

cargo build --release --quiet -p website-monitor-source -p website-monitor-sink -p website-monitor-bench
WM_BENCH_HTTP=127.0.0.1:$port "${CARGO_TARGET_DIR:-$root/target}/release/website-monitor-bench"
