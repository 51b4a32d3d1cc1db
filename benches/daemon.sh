#!/usr/bin/env bash
# Daemon benchmarks (issue 3), on the release binary:
#   idle         three services refreshing every second from unchanged `file` locators, for
#                $IDLE_SECONDS: steady-state RSS (VmRSS, and VmHWM as the peak) and CPU time,
#                reported per hour of wall time and as a share of one core;
#   convergence  one service, refresh 1s, default settle window (2s..10s): $ROUNDS times, the
#                backend file is replaced and the time until the reload command runs is taken.
#                The daemon's debug log stamps the moment a refresh saw the change, so the total
#                splits into: waiting for the next refresh, the settle window, and elasticd's own
#                overhead (the rest: render, compare, install, spawning the reload command).
# Prints markdown tables. Nothing is left behind; the daemon is stopped by PID.
#
# Usage: benches/daemon.sh     Env: IDLE_SECONDS (default 120), ROUNDS (default 20),
#                                   CARGO_TARGET_DIR (respected), BIN (use this binary instead)
set -euo pipefail
IDLE_SECONDS=${IDLE_SECONDS:-120}
ROUNDS=${ROUNDS:-20}
cd "$(dirname "$0")/.."
unset RUST_LOG ELASTICD_LOG

. benches/lib.sh
bench_binary

# --- idle --------------------------------------------------------------------------------------
mkdir -p "$WORK/idle"
cd "$WORK/idle"
for s in a b c; do
  python3 -c "import json; print(json.dumps([{'targets': ['127.0.%d.%d:8080' % (i // 250, i % 250 + 1) for i in range(20)]}]))" > "$s.json"
done
cat > config.yaml <<YAML
services:
  a: { refresh: 1s, locators: [file: { path: a.json }] }
  b: { refresh: 1s, locators: [file: { path: b.json }] }
  c: { refresh: 1s, locators: [file: { path: c.json }] }
frontends:
  fe: { reload: { command: [sh, -c, "echo reload >> reloads"] } }
outputs:
  - { template: "builtin:nginx", path: a.conf, frontend: fe, vars: { service: a } }
  - { template: "builtin:haproxy", path: b.cfg, frontend: fe, vars: { service: b } }
  - { template: "builtin:varnish", path: c.vcl, frontend: fe, vars: { service: c } }
YAML
"$BIN" run --config config.yaml 2> daemon.log &
DAEMON_PID=$!
# Let it start, apply once and settle into its steady state before measuring.
sleep 15
cpu0=$(cpu_seconds "$DAEMON_PID"); t0=$(date +%s.%N)
sleep "$IDLE_SECONDS"
cpu1=$(cpu_seconds "$DAEMON_PID"); t1=$(date +%s.%N)
rss=$(status_kb "$DAEMON_PID" VmRSS); hwm=$(status_kb "$DAEMON_PID" VmHWM)
kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID" || true; DAEMON_PID=""
reloads=$(wc -l < reloads)
python3 - "$cpu0" "$cpu1" "$t0" "$t1" "$rss" "$hwm" "$reloads" "$IDLE_SECONDS" <<'PY'
import sys
cpu0, cpu1, t0, t1 = map(float, sys.argv[1:5])
rss, hwm, reloads, secs = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), sys.argv[8]
wall = t1 - t0
cpu = cpu1 - cpu0
print(f"### Idle daemon: 3 services, refresh 1s, {secs}s measured\n")
print("| steady RSS | peak RSS (VmHWM) | CPU per hour of wall time | share of one core | reloads |")
print("|---|---|---|---|---|")
print(f"| {rss/1024:.1f} MB | {hwm/1024:.1f} MB | {cpu/wall*3600:.1f} s | {cpu/wall*100:.3f}% | {reloads} |\n")
PY

# --- convergence -------------------------------------------------------------------------------
mkdir -p "$WORK/conv"
cd "$WORK/conv"
echo '[{"targets": ["127.0.0.1:8080"]}]' > web.json
cat > config.yaml <<'YAML'
services:
  web: { refresh: 1s, locators: [file: { path: web.json }] }
frontends:
  fe: { reload: { command: [sh, -c, "date +%s.%N >> reloads"] } }
outputs:
  - { template: "builtin:nginx", path: web.conf, frontend: fe, vars: { service: web } }
YAML
"$BIN" run --config config.yaml --log "info,elasticd=debug" 2> daemon.log &
DAEMON_PID=$!
# Wait for the first apply.
for _ in $(seq 200); do [ -s reloads ] && break; sleep 0.1; done
: > changes
for i in $(seq "$ROUNDS"); do
  before=$(wc -l < reloads)
  sleep "0.$((RANDOM % 10))" # land at a random point of the refresh cycle
  python3 -c "import json; print(json.dumps([{'targets': ['127.0.0.1:8080', '127.0.1.%d:8080' % $i]}]))" > web.json.tmp
  date +%s.%N >> changes
  mv web.json.tmp web.json
  for _ in $(seq 300); do [ "$(wc -l < reloads)" -gt "$before" ] && break; sleep 0.02; done
done
kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID" || true; DAEMON_PID=""
python3 - "$ROUNDS" <<'PY'
import datetime, re, statistics, sys
rounds = int(sys.argv[1])
changes = [float(l) for l in open("changes")]
reloads = [float(l) for l in open("reloads")][1:]
seen = []
for line in open("daemon.log"):
    if "change: +" in line:
        stamp = re.match(r"\S*?(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z", line)
        if stamp:
            t = datetime.datetime.fromisoformat(stamp.group(1)).replace(tzinfo=datetime.timezone.utc)
            seen.append(t.timestamp())
seen = seen[1:]  # the first one is start-up
n = min(len(changes), len(reloads), len(seen))
total = [reloads[i] - changes[i] for i in range(n)]
wait = [seen[i] - changes[i] for i in range(n)]
overhead = [reloads[i] - seen[i] - 2.0 for i in range(n)]
def row(name, xs):
    xs = sorted(xs)
    return f"| {name} | {statistics.median(xs)*1000:.0f} ms | {xs[-1]*1000:.0f} ms |"
print(f"### Convergence: refresh 1s, settle 2s..10s, {n} changes\n")
print("| part | median | worst |")
print("|---|---|---|")
print(row("change to reload command (total)", total))
print(row("waiting for the next refresh (and jitter)", wait))
print(row("elasticd overhead beyond refresh + settle", overhead))
print()
PY
