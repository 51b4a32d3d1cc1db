#!/usr/bin/env bash
# The whole test suite, installing what it needs first: the real frontends (nginx with its stream
# module, HAProxy, Varnish, Apache httpd) from Debian, `protoc` (protobuf-compiler, which the
# etcd client's build runs) and etcd (etcd-server, which tests/fleet.rs starts on loopback), then
# fmt, clippy and every test.
# Usage: scripts/test.sh   (as root, or with sudo available, on Debian/Ubuntu)
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in nginx libnginx-mod-stream haproxy varnish apache2 protobuf-compiler etcd-server; do
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

# The AWS locators are tested against moto, a local AWS API emulator (Python), kept in a
# virtualenv outside the tree so that later runs reuse it. tests/aws.rs fails without it, and so
# does tests/plugin_examples.rs, whose AWS plugins use the boto3 that moto brings along.
MOTO_VERSION="5.2.5"
venv="${ELASTICD_VENV:-/var/tmp/elasticd-venv}"
if ! "$venv/bin/python" -c "import sys, moto; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
  echo "== installing moto[server]==$MOTO_VERSION into $venv"
  if ! python3 -m venv --clear "$venv"; then
    # Debian's python3 keeps venv in a package of its own.
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv
    python3 -m venv --clear "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi
export ELASTICD_MOTO_SERVER="$venv/bin/moto_server"

echo "== cargo fmt --check"
cargo fmt --all -- --check
# cargo fmt does not reach modules declared inside the locators! and reload_actions! macros.
echo "== rustfmt --check (every source file)"
git ls-files -z 'src/*.rs' | xargs -0 rustfmt --edition 2024 --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
# Without the `aws` feature (no AWS SDK) the build must stay clean and pass its own tests.
echo "== cargo clippy --no-default-features"
cargo clippy --all-targets --locked --no-default-features -- -D warnings
run_tests() {
  if command -v cargo-nextest >/dev/null 2>&1; then
    cargo nextest run --locked --no-fail-fast "$@"
  else
    cargo test --locked --no-fail-fast "$@"
  fi
}
echo "== tests --no-default-features"
run_tests --no-default-features
echo "== tests"
run_tests
