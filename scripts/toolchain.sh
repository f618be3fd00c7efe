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
