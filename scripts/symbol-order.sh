#!/usr/bin/env bash
# Regenerates linker/symbol-order.txt, the list of functions that the release binary runs in its
# common jobs, which build.rs hands to the linker (lld's --symbol-ordering-file) so that they sit
# side by side in the binary. A one-shot `render` or an idle daemon then maps a few hundred KB of
# code instead of pages scattered over 12 MB of it (most of which is the AWS SDK and etcd client,
# cold in every job but their own): less resident memory and fewer page faults at start-up
# (docs/benchmarks.md, "Code layout").
#
# The names are the binary's mangled symbols. Their hashes follow the toolchain, the enabled
# features and the dependencies' versions, so the list is made for both builds that ship (default
# features, and --no-default-features as scripts/package-deb.sh builds it) and should be remade
# after a toolchain or Cargo.lock update. A name that no longer matches is skipped by the linker:
# a stale list costs memory, never correctness. The script ends by printing how many listed names
# each build still has.
#
# Jobs recorded, each under valgrind --tool=callgrind (which names every function that ran):
# `render` of 10 and 10,000 backends (changed and unchanged), `check`, and the daemon `run` with
# three services, the operations server and a backend change, asked for its status page, JSON
# API and metrics over loopback.
#
# Usage: scripts/symbol-order.sh   Env: CARGO_TARGET_DIR (respected), FEATURE_SETS (default
#        "default no-default"), KEEP=1 keeps the scratch directory, BIN_DIR records the binaries
#        BIN_DIR/elasticd-default and BIN_DIR/elasticd-no-default instead of building them.
# Needs: cargo, python3, valgrind, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
FEATURE_SETS=${FEATURE_SETS:-"default no-default"}
OUT="$ROOT/linker/symbol-order.txt"
unset RUST_LOG ELASTICD_LOG

die() { echo "scripts/symbol-order.sh: $*" >&2; exit 1; }
for tool in cargo python3 valgrind curl; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing"
done

WORK=$(mktemp -d)
DAEMON_PID=""
cleanup() {
  if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill -TERM "$DAEMON_PID" 2>/dev/null || true
    wait "$DAEMON_PID" 2>/dev/null || true
  fi
  if [ "${KEEP:-0}" = 1 ]; then echo "scratch kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

target_dir=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
cg() { # NAME ARGS...: one job under callgrind, its profile in $WORK/NAME.cg
  local name=$1; shift
  valgrind --tool=callgrind --demangle=no --dump-instr=no --callgrind-out-file="$WORK/$name.cg" \
    "$@" >/dev/null 2>"$WORK/$name.log" || { cat "$WORK/$name.log" >&2; die "$name failed"; }
}

# Scenarios: the render benchmark's file_sd documents (benches/render.sh) and a daemon config.
mkdir -p "$WORK/jobs/out"
python3 - "$WORK/jobs" <<'PY'
import json, sys
d = sys.argv[1]
zones = ["zone-a", "zone-b", "zone-c"]
for n in (10, 10000):
    groups = []
    for i in range(n):
        k = i + 1
        groups.append({
            "targets": ["127.%d.%d.%d:8080" % ((k >> 16) & 255, (k >> 8) & 255, k & 255)],
            "labels": {"zone": zones[i % 3], "rack": "r%d" % (i % 40), "instance": "web-%05d" % i},
        })
    json.dump(groups, open("%s/b%d.json" % (d, n), "w"))
for s in "abc":
    json.dump([{"targets": ["127.0.0.%d:8080" % i for i in range(1, 21)]}], open("%s/%s.json" % (d, s), "w"))
PY
for n in 10 10000; do
  cat > "$WORK/jobs/render$n.yaml" <<YAML
services:
  web:
    locators:
      - file: { path: b$n.json }
outputs:
  - { template: "builtin:nginx", path: out/nginx-$n.conf, vars: { service: web } }
YAML
done
port=$((20000 + RANDOM % 20000))
cat > "$WORK/jobs/daemon.yaml" <<YAML
daemon: { settle_min: 100ms, settle_max: 1s }
server: { listen: ["127.0.0.1:$port"] }
services:
  a: { refresh: 1s, locators: [file: { path: a.json }] }
  b: { refresh: 1s, locators: [file: { path: b.json }] }
  c: { refresh: 1s, locators: [file: { path: c.json }] }
frontends:
  fe: { reload: { command: [sh, -c, "echo reload >> reloads"] } }
outputs:
  - { template: "builtin:nginx", path: out/a.conf, frontend: fe, vars: { service: a } }
  - { template: "builtin:haproxy", path: out/b.cfg, frontend: fe, vars: { service: b } }
  - { template: "builtin:varnish", path: out/c.vcl, frontend: fe, vars: { service: c } }
YAML

record() { # FEATURE_SET: build it and record its jobs' functions into $WORK/FEATURE_SET.txt
  local set=$1 flags=() bin
  [ "$set" = no-default ] && flags=(--no-default-features)
  bin="$WORK/elasticd-$set"
  if [ -n "${BIN_DIR:-}" ]; then
    cp "$BIN_DIR/elasticd-$set" "$bin"
  else
    echo "== cargo build --release ${flags[*]}" >&2
    cargo build --release --locked --quiet "${flags[@]}"
    cp "$target_dir/release/elasticd" "$bin"
  fi
  cd "$WORK/jobs"
  echo "== $set: render, check" >&2
  for n in 10 10000; do
    rm -f out/nginx-$n.conf*
    cg "$set-render$n" "$bin" render --config render$n.yaml
    cg "$set-render$n-same" "$bin" render --config render$n.yaml
  done
  cg "$set-check" "$bin" check --config daemon.yaml
  echo "== $set: daemon" >&2
  rm -f out/a.conf* out/b.cfg* out/c.vcl*
  valgrind --tool=callgrind --demangle=no --dump-instr=no \
    --callgrind-out-file="$WORK/$set-daemon.cg" \
    "$bin" run --config daemon.yaml >/dev/null 2>"$WORK/$set-daemon.log" &
  DAEMON_PID=$!
  local i
  for ((i = 0; i < 120; i++)); do
    [ -s out/c.vcl ] && break
    kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$WORK/$set-daemon.log" >&2; die "the daemon exited"; }
    sleep 0.5
  done
  [ -s out/c.vcl ] || die "the daemon wrote no output in a minute"
  python3 -c "import json; print(json.dumps([{'targets': ['127.0.0.%d:8080' % i for i in range(2, 22)]}]))" > a.json.tmp
  mv a.json.tmp a.json
  sleep 8
  for path in / /api/v1/status /metrics /healthz; do
    curl -fsS -o /dev/null "http://127.0.0.1:$port$path" || echo "note: GET $path failed" >&2
  done
  kill -TERM "$DAEMON_PID"
  wait "$DAEMON_PID" || true
  DAEMON_PID=""
  cd "$ROOT"
  # Defined text symbols of the binary, and every function the profiles name among them.
  nm --defined-only "$bin" | awk '$2 ~ /^[tTwW]$/ { print $3 }' | sort -u > "$WORK/$set.syms"
  local jobs=() job
  for job in render10 render10-same render10000 render10000-same check daemon; do
    jobs+=("$WORK/$set-$job.cg")
  done
  python3 - "$WORK/$set.syms" "${jobs[@]}" > "$WORK/$set.txt" <<'PY'
import re, sys
syms = set(open(sys.argv[1]).read().split())
# Callgrind's format: "fn=(id) name" opens a function (the name only the first time an id is
# used), "cfn=" names a callee, "calls=" is followed by one line of the call's inclusive cost,
# and other cost lines ("position cost", positions maybe relative) are the function's own.
# Functions are laid out job by job, in the order the jobs are given (the smallest first), so that
# a small job's code is one run at the front; within a job, hottest first.
cost, first, entry = {}, {}, re.compile(r"^(c?fn)=\((\d+)\)(?: (.*))?$")
for job, path in enumerate(sys.argv[2:]):
    names, current, inclusive = {}, None, False
    for line in open(path, errors="replace"):
        m = entry.match(line)
        if m:
            kind, ident, name = m.groups()
            if name is not None:
                names[ident] = name.strip()
            name = names.get(ident)
            cost.setdefault(name, 0)
            first.setdefault(name, job)
            if kind == "fn":
                current = name
            continue
        if line.startswith("calls="):
            inclusive = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            parts = line.split()
            if not inclusive and current is not None and len(parts) >= 2 and parts[1].isdigit():
                cost[current] += int(parts[1])
            inclusive = False
ranked = sorted((n for n in cost if n in syms), key=lambda n: (first[n], -cost[n], n))
print("\n".join(ranked))
PY
  echo "== $set: $(wc -l < "$WORK/$set.txt") functions" >&2
}

for set in $FEATURE_SETS; do record "$set"; done
mkdir -p "$(dirname "$OUT")"
{
  echo "# Functions run by the common jobs of the release binary, for lld's --symbol-ordering-file"
  echo "# (build.rs). Made by scripts/symbol-order.sh; do not edit by hand."
  for set in $FEATURE_SETS; do cat "$WORK/$set.txt"; done | awk '!seen[$0]++'
} > "$OUT"
echo "== wrote $(grep -vc '^#' "$OUT") names to ${OUT#"$ROOT/"}" >&2
