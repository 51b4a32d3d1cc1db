#!/usr/bin/env bash
# Builds the Debian package (scripts/package-deb.sh), installs it with dpkg -i, checks what it
# installed, verifies the systemd unit with systemd-analyze (when there is one), runs the
# installed binary's `check` on the installed config, and removes the package again (also when a
# step fails). Installs cargo-deb from crates.io when it is missing. As root or with sudo.
# Usage: scripts/test-deb.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

if dpkg-query -W -f='${Status}' elasticd 2>/dev/null | grep -q "ok installed"; then
  echo "test-deb: a package elasticd is already installed on this machine; not replacing it" >&2
  exit 1
fi
if ! command -v cargo-deb >/dev/null 2>&1; then
  echo "== installing cargo-deb"
  cargo install --locked cargo-deb
fi
echo "== building the package"
deb="$(scripts/package-deb.sh | tail -n 1)"
echo "$deb"

cleanup() { $SUDO dpkg --purge elasticd >/dev/null 2>&1 || true; }
trap cleanup EXIT
echo "== dpkg -i"
$SUDO dpkg -i "$deb"

fail() { echo "test-deb: $*" >&2; exit 1; }
for f in /usr/bin/elasticd /etc/elasticd/config.yaml /lib/systemd/system/elasticd.service \
  /usr/share/man/man1/elasticd.1.gz /usr/share/bash-completion/completions/elasticd \
  /usr/share/zsh/vendor-completions/_elasticd /usr/share/fish/vendor_completions.d/elasticd.fish \
  /usr/share/doc/elasticd/README.md /usr/share/doc/elasticd/config.yaml.example \
  /usr/share/doc/elasticd/docs/config.md /var/lib/elasticd; do
  [ -e "$f" ] || fail "$f is not installed"
done
dpkg-query -W -f='${Conffiles}\n' elasticd | grep -q "^ /etc/elasticd/config.yaml " \
  || fail "/etc/elasticd/config.yaml is not a conffile"
[ "$(stat -c %a /usr/bin/elasticd)" = 755 ] || fail "/usr/bin/elasticd is not mode 755"
/usr/bin/elasticd --version | grep -q "^elasticd " || fail "the installed binary does not run"
zcat /usr/share/man/man1/elasticd.1.gz | grep -q '^\.TH elasticd 1' || fail "no man page"
bash -n /usr/share/bash-completion/completions/elasticd || fail "bash completion does not parse"
unit=/lib/systemd/system/elasticd.service
for want in "ExecStart=/usr/bin/elasticd run" "ExecReload=/bin/kill -HUP \$MAINPID" \
  "ProtectSystem=strict" "NoNewPrivileges=yes" "CapabilityBoundingSet=CAP_KILL"; do
  grep -qF "$want" "$unit" || fail "$unit lacks $want"
done
if command -v systemd-analyze >/dev/null 2>&1; then
  echo "== systemd-analyze verify"
  # verify also loads the units this one names; only complaints about elasticd's own count.
  out="$(systemd-analyze verify "$unit" 2>&1 || true)"
  echo "$out"
  if echo "$out" | grep -i "elasticd.service" | grep -qv "Failed to put bus name\|Cannot add dependency job"; then
    fail "systemd-analyze verify complains about the unit"
  fi
else
  echo "systemd-analyze not found; the unit was not verified"
fi
echo "== elasticd check on the installed config"
(cd / && /usr/bin/elasticd check --config /etc/elasticd/config.yaml)
echo "== the package installs, checks and removes cleanly"
$SUDO dpkg --purge elasticd
trap - EXIT
[ ! -e /usr/bin/elasticd ] || fail "/usr/bin/elasticd is left after purge"
[ ! -e /etc/elasticd/config.yaml ] || fail "/etc/elasticd/config.yaml is left after purge"
[ ! -e /var/lib/elasticd ] || fail "/var/lib/elasticd is left after purge"
echo "test-deb: OK"
