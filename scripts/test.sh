#!/usr/bin/env bash
# The whole test suite, installing what it needs first: the real frontends (nginx with its stream
# module, HAProxy, Varnish, Apache httpd), Chromium with chromedriver, Prometheus's promtool,
# groff, `protoc` (protobuf-compiler, which the etcd client's build runs, and libprotobuf-dev
# with the google/protobuf/*.proto files it imports: only a recommendation of protoc's) and etcd (etcd-server,
# which tests/fleet.rs starts on loopback) from Debian, moto (a local AWS API emulator) into a
# Python virtualenv, and cargo-deb from crates.io; then fmt, clippy, every test, and the Debian
# package built, installed and removed again (scripts/test-deb.sh).
# Usage: scripts/test.sh   (as root, or with sudo available, on Debian/Ubuntu)
set -euo pipefail
cd "$(dirname "$0")/.."

# Prerequisites that Debian cannot install for us, checked before anything is installed.
die() { echo "scripts/test.sh: $*" >&2; exit 1; }
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust with rustup (https://rustup.rs)"
want="$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)"
have="$(cargo --version | awk '{print $2}')"
if [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n 1)" != "$want" ]; then
  die "cargo $have is older than the rust-version $want in Cargo.toml: rustup update"
fi
cargo fmt --version >/dev/null 2>&1 || die "rustfmt is missing: rustup component add rustfmt"
cargo clippy --version >/dev/null 2>&1 || die "clippy is missing: rustup component add clippy"
command -v cc >/dev/null 2>&1 || die "no C compiler (cc), needed by the ring crate: apt-get install gcc"
command -v python3 >/dev/null 2>&1 || die "python3 is missing (for moto): apt-get install python3"
command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this script installs the frontends from Debian/Ubuntu packages"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || die "run as root, or install sudo"
  SUDO="sudo"
fi

# Debian starts services on install where it can; a policy-rc.d that says no keeps them stopped,
# so that tests only ever talk to frontends they start themselves. One already there is put back
# afterwards, also when the install fails.
policy=/usr/sbin/policy-rc.d
policy_saved=""
restore_policy() {
  if [ -n "$policy_saved" ]; then
    $SUDO mv -f "$policy_saved" "$policy"
    policy_saved=""
  else
    $SUDO rm -f "$policy"
  fi
}

need=()
# chromium and chromium-driver: tests/status_page.rs drives the status page in a real browser.
# prometheus brings promtool, which tests/metrics.rs runs on /metrics and on docs/alerts.yml.
for pkg in nginx libnginx-mod-stream haproxy varnish apache2 chromium chromium-driver prometheus groff-base protobuf-compiler libprotobuf-dev etcd-server; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  $SUDO apt-get update -qq
  if [ -e "$policy" ]; then
    policy_saved="$($SUDO mktemp /usr/sbin/policy-rc.d.elasticd-XXXXXX)"
    $SUDO cp -p "$policy" "$policy_saved"
  fi
  trap restore_policy EXIT
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod +x "$policy"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
  restore_policy
  trap - EXIT
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
# The Debian package: built with cargo-deb (installed from crates.io when missing) from the
# --no-default-features release binary, installed with dpkg -i, checked and removed again.
echo "== Debian package"
scripts/test-deb.sh
