#!/usr/bin/env bash
# Convergence of real frontends under load (issue 5). For each of nginx (HUP), HAProxy
# (file + USR2 to the master, and haproxy_runtime with 8 slots), Varnish (varnishadm vcl.load +
# vcl.use) and Apache httpd (USR1, graceful), on loopback: six HTTP backends on 127.0.0.10-15
# that answer with their identity, the frontend started as a plain process, `elasticd run`
# (settle 100ms..1s, refresh 1s) on a `file` locator, and $LIVE_CLIENTS keep-alive clients
# sending `GET /` without pause.
# 50 passes: each rewrites the locator file (one backend added, one removed) and sends SIGUSR1;
# the convergence time is from the rewrite to the first answer served by the added backend.
#
# The harness is tests/support/live.rs; each frontend's run is the ignored test
# `<frontend>::bench_convergence` in tests/live.rs, run one at a time in a release build.
# Prints a markdown table. Every process is stopped by process group when its run ends.
#
# Usage: benches/convergence.sh [FILTER]   Env: LIVE_CLIENTS (default 4), CARGO_TARGET_DIR,
#                                          CARGO_FLAGS (default --no-default-features)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"
unset RUST_LOG ELASTICD_LOG
export LIVE_CLIENTS="${LIVE_CLIENTS:-4}"
# shellcheck disable=SC2086 # CARGO_FLAGS is a list of flags
flags=(${CARGO_FLAGS:---no-default-features})

echo "== cargo test --release --test live (build)" >&2
cargo test --release --locked "${flags[@]}" --test live --no-run --quiet >&2

echo "| frontend (reload) | passes | convergence median | convergence worst | apply median | apply worst | requests/s | requests | connection errors | 5xx and other non-200 | keep-alive retries |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for fe in nginx haproxy haproxy_runtime varnish varnish_action apache; do
  if [ -n "${1:-}" ] && [[ "$fe" != *"$1"* ]]; then continue; fi
  if out=$(cargo test --release --locked "${flags[@]}" --test live --quiet -- \
    --ignored --exact "$fe::bench_convergence" --nocapture --test-threads 1 2>&1); then
    grep '^| ' <<<"$out"
  else
    echo "| $fe | run failed: see stderr | | | | | | | | | |"
    tail -n 60 <<<"$out" >&2
  fi
done
