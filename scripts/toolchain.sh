#!/usr/bin/env bash
# Makes sure cargo, rustfmt and clippy are there. rustfmt and clippy are
# installed with rustup when missing; when that is impossible the Makefile
# warns loudly and goes on with the tests.
set -euo pipefail
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install Rust with rustup (https://rustup.rs) or apt-get install cargo" >&2
  exit 1
fi
for component in rustfmt clippy; do
  tool=$([ "$component" = rustfmt ] && echo fmt || echo clippy)
  if ! cargo "$tool" --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null 2>&1; then
      rustup component add "$component" >/dev/null 2>&1 ||
        echo "WARNING: could not install $component with rustup" >&2
    else
      echo "WARNING: $component is missing and rustup is not available to install it" >&2
    fi
  fi
done
# rdkafka links the system libzstd (zstd-pkg-config); `make up` installs it.
if ! { command -v pkg-config >/dev/null 2>&1 && pkg-config --exists libzstd; }; then
  echo "WARNING: libzstd-dev (found with pkg-config) is missing, so rdkafka-sys will not build;" \
    "run 'make up' (it installs it as root) or: sudo apt-get install -y pkg-config libzstd-dev" >&2
fi
# A clean build of the workspace (debug, clippy, docs) writes about 3 GB
# under target/; say so up front instead of failing mid-build with ENOSPC.
need_kb=$((4 * 1024 * 1024))
dir=${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target}
mkdir -p "$dir" 2>/dev/null || true
free_kb=$(df -Pk "$dir" 2>/dev/null | awk 'NR == 2 { print $4 }') || true
if [[ "$free_kb" =~ ^[0-9]+$ ]] && [ "$free_kb" -lt "$need_kb" ]; then
  echo "WARNING: only $((free_kb / 1024)) MiB free for $dir; a clean build needs about 4 GiB." \
    "Free some space (e.g. cargo clean in other checkouts) if the build fails with 'No space left on device'." >&2
fi
