#!/usr/bin/env bash
# The whole test suite, installing what it needs first: the real frontends (nginx with its stream
# module, HAProxy, Varnish, Apache httpd) from Debian, then fmt, clippy and every test.
# Usage: scripts/test.sh   (as root, or with sudo available, on Debian/Ubuntu)
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in nginx libnginx-mod-stream haproxy varnish apache2; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # Debian starts services on install where it can; policy-rc.d keeps them stopped, so that tests
  # only ever talk to frontends they start themselves.
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
  $SUDO rm -f /usr/sbin/policy-rc.d
fi
# The checkers live in sbin, which a non-login PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== tests"
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast
else
  cargo test --locked --no-fail-fast
fi
