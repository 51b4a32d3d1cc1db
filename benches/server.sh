#!/usr/bin/env bash
# Operations server benchmarks (issue 11), on the release binary:
#   idle RSS     the idle daemon of benches/daemon.sh (three services refreshing every second,
#                20 backends each) without a `server:` section and with one, $RSS_ROUNDS times
#                each, alternating; VmRSS sampled every second for $IDLE_SECONDS after a 10 s
#                warm-up, the median of each run, then the median over runs. The server runs
#                idle (no client) and is asked once per run afterwards, so its RSS after serving
#                is shown too.
#   10k backends one service with a `file` locator of $BACKENDS backends (three labels each, as in
#                benches/render.sh) and an nginx output; after the first apply, $REQUESTS
#                sequential GETs of /metrics and of /api/v1/status, each on a new loopback
#                connection, timed by the client (connect to last byte): median, p90, worst, and
#                the response size. Then the daemon's RSS.
#   allocation   the same 10k daemon under heaptrack with `refresh: 1h` (no background work):
#                one run serves nothing, one run serves $ALLOC_REQUESTS of each endpoint; the
#                difference in allocation calls and bytes, per request. Skipped without
#                heaptrack (Debian package `heaptrack`).
# Prints markdown tables. Nothing is left behind; daemons are stopped by PID.
#
# Usage: benches/server.sh   Env: IDLE_SECONDS (20), RSS_ROUNDS (3), BACKENDS (10000),
#   REQUESTS (50), ALLOC_REQUESTS (20), FEATURES (cargo flags, default --no-default-features),
#   CARGO_TARGET_DIR (respected), BIN (use this binary instead of building)
set -euo pipefail
IDLE_SECONDS=${IDLE_SECONDS:-20}
RSS_ROUNDS=${RSS_ROUNDS:-3}
BACKENDS=${BACKENDS:-10000}
REQUESTS=${REQUESTS:-50}
ALLOC_REQUESTS=${ALLOC_REQUESTS:-20}
FEATURES=${FEATURES:---no-default-features}
cd "$(dirname "$0")/.."
unset RUST_LOG ELASTICD_LOG

. benches/lib.sh
# shellcheck disable=SC2086 # FEATURES is a list of flags
bench_binary $FEATURES
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Waits until GET $1 answers and its body contains $2.
wait_for() {
  for _ in $(seq 600); do
    curl -fsS "$1" 2>/dev/null | grep -q "$2" && return 0
    sleep 0.1
  done
  echo "error: $1 never showed $2" >&2
  exit 1
}

echo "machine: $(nproc) CPUs, $(uname -sr); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "binary: $BIN ($("$BIN" --version), $(du -h "$BIN" | cut -f1)), commit $(git rev-parse --short HEAD)"
echo

# --- idle RSS with and without the server -------------------------------------------------------
mkdir -p "$WORK/idle"
cd "$WORK/idle"
for s in a b c; do
  python3 -c "import json; print(json.dumps([{'targets': ['127.0.%d.%d:8080' % (i // 250, i % 250 + 1) for i in range(20)]}]))" > "$s.json"
done
idle_config() { # $1: the server section, or nothing
  cat <<YAML
$1
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
}
: > rss.tsv
for round in $(seq "$RSS_ROUNDS"); do
  for mode in off on; do
    port=$(free_port)
    if [ "$mode" = on ]; then
      idle_config "server: { listen: [\"127.0.0.1:$port\"] }" > config.yaml
    else
      idle_config "" > config.yaml
    fi
    "$BIN" run --config config.yaml 2> "daemon-$mode-$round.log" &
    DAEMON_PID=$!
    sleep 10
    samples=()
    for _ in $(seq "$IDLE_SECONDS"); do
      samples+=("$(status_kb "$DAEMON_PID" VmRSS)")
      sleep 1
    done
    idle=$(printf '%s\n' "${samples[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
    served=""
    if [ "$mode" = on ]; then
      for path in metrics api/v1/status readyz; do curl -fsS -o /dev/null "http://127.0.0.1:$port/$path"; done
      sleep 1
      served=$(status_kb "$DAEMON_PID" VmRSS)
    fi
    printf '%s\t%s\t%s\t%s\n' "$mode" "$round" "$idle" "$served" >> rss.tsv
    stop_daemon
  done
done
python3 - "$IDLE_SECONDS" "$RSS_ROUNDS" <<'PY'
import statistics, sys
secs, rounds = sys.argv[1], sys.argv[2]
rows = [l.rstrip("\n").split("\t") for l in open("rss.tsv")]
off = [int(r[2]) for r in rows if r[0] == "off"]
on = [int(r[2]) for r in rows if r[0] == "on"]
served = [int(r[3]) for r in rows if r[0] == "on"]
mb = lambda kb: f"{kb / 1024:.2f} MB"
print(f"### Idle RSS: 3 services, refresh 1s; median of {secs} samples per run, {rounds} runs each\n")
print("| without server | with server, idle | difference | with server, after serving each endpoint once | runs without (MB) | runs with (MB) |")
print("|---:|---:|---:|---:|---:|---:|")
m_off, m_on, m_served = statistics.median(off), statistics.median(on), statistics.median(served)
print(f"| {mb(m_off)} | {mb(m_on)} | {(m_on - m_off) / 1024:+.2f} MB | {mb(m_served)} | "
      f"{', '.join(f'{k / 1024:.2f}' for k in off)} | {', '.join(f'{k / 1024:.2f}' for k in on)} |\n")
PY

# --- 10k backends: /metrics and /api/v1/status ------------------------------------------------
mkdir -p "$WORK/big"
cd "$WORK/big"
python3 - "$BACKENDS" > backends.json <<'PY'
import json, sys
n = int(sys.argv[1])
groups = []
for i in range(n):
    a, b, c = (i // 62500) % 256, (i // 250) % 250, i % 250 + 1
    groups.append({"targets": [f"127.{a}.{b}.{c}:8080"],
                   "labels": {"zone": f"z{i % 3}", "rack": f"r{i % 40}", "instance": f"i-{i:08x}"}})
print(json.dumps(groups))
PY
big_config() { # $1: port, $2: refresh
  cat <<YAML
server: { listen: ["127.0.0.1:$1"] }
services:
  web: { refresh: $2, locators: [file: { path: backends.json }] }
outputs:
  - { template: "builtin:nginx", path: web.conf, vars: { service: web } }
YAML
}
port=$(free_port)
big_config "$port" 1s > config.yaml
"$BIN" run --config config.yaml 2> daemon.log &
DAEMON_PID=$!
wait_for "http://127.0.0.1:$port/metrics" "elasticd_backends{service=\"web\"} $BACKENDS"
sleep 2
python3 - "$port" "$REQUESTS" "$BACKENDS" "$(status_kb "$DAEMON_PID" VmRSS)" <<'PY'
import socket, statistics, sys, time
port, n, backends = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def get(path):
    start = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := s.recv(1 << 20):
        data += chunk
    s.close()
    took = time.perf_counter() - start
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:100]
    return took, len(body)
print(f"### {backends:,} backends: {n} sequential requests each, a new connection per request\n")
print("| endpoint | median | p90 | worst | response size |")
print("|---|---:|---:|---:|---:|")
for path in ["/metrics", "/api/v1/status"]:
    get(path)  # warm-up
    runs = [get(path) for _ in range(n)]
    times = sorted(t for t, _ in runs)
    size = runs[-1][1]
    p90 = times[min(len(times) - 1, int(len(times) * 0.9))]
    print(f"| `GET {path}` | {statistics.median(times) * 1000:.2f} ms | {p90 * 1000:.2f} ms | "
          f"{times[-1] * 1000:.2f} ms | {size / 1024:.1f} KB |")
print(f"\nDaemon RSS before the requests: {int(sys.argv[4]) / 1024:.1f} MB", end="")
PY
echo ", after: $(awk '{ printf "%.1f MB", $1 / 1024 }' <<< "$(status_kb "$DAEMON_PID" VmRSS)"); peak (VmHWM): $(awk '{ printf "%.1f MB", $1 / 1024 }' <<< "$(status_kb "$DAEMON_PID" VmHWM)")."
echo
stop_daemon

# --- allocation per request (heaptrack) -------------------------------------------------------
if ! command -v heaptrack >/dev/null || ! command -v heaptrack_print >/dev/null; then
  echo "heaptrack is not installed (Debian package heaptrack): allocation not measured."
  exit 0
fi
alloc_run() { # $1: the endpoint asked, $2: how often; prints "calls bytes" for the whole run
  local port child
  port=$(free_port)
  big_config "$port" 1h > config.yaml
  rm -f web.conf
  heaptrack -o "$WORK/big/heap-$2-${1//\//_}" "$BIN" run --config config.yaml > heaptrack.log 2>&1 &
  DAEMON_PID=$!
  # Waiting on the rendered file, not on /metrics, so that no request but the measured ones
  # reaches the server.
  for _ in $(seq 600); do [ -s web.conf ] && break; sleep 0.1; done
  [ -s web.conf ] || { echo "error: the daemon under heaptrack never rendered" >&2; exit 1; }
  sleep 1
  for _ in $(seq "$2"); do curl -fsS -o /dev/null "http://127.0.0.1:$port/$1"; done
  # heaptrack runs the daemon as its child; stopping the child ends the recording.
  child=$(pgrep -P "$DAEMON_PID" -x elasticd || true)
  kill -TERM "${child:-$DAEMON_PID}" 2>/dev/null || true
  wait "$DAEMON_PID" 2>/dev/null || true
  DAEMON_PID=""
  # The size histogram (`SIZE COUNT` per line) adds up to the calls and the bytes allocated.
  heaptrack_print -a 0 -p 0 -T 0 -H "$WORK/big/hist" "$WORK/big/heap-$2-${1//\//_}".* > /dev/null 2>&1
  awk '{ bytes += $1 * $2; calls += $2 } END { print calls, bytes }' "$WORK/big/hist"
}
# Everything else in a run (start-up, the one locate and render) is the same with and without the
# requests, so the difference is what they cost.
base=$(alloc_run healthz 0)
metrics=$(alloc_run metrics "$ALLOC_REQUESTS")
status=$(alloc_run api/v1/status "$ALLOC_REQUESTS")
python3 - "$base" "$metrics" "$status" "$ALLOC_REQUESTS" "$BACKENDS" <<'PY'
import sys
def parse(s):
    calls, size = s.split()
    return int(calls), float(size)
(c0, b0) = parse(sys.argv[1])
n, backends = int(sys.argv[4]), int(sys.argv[5])
print(f"### Allocation at {backends:,} backends (heaptrack; {n} requests against none)\n")
print("| endpoint | allocation calls per request | bytes allocated per request |")
print("|---|---:|---:|")
for name, arg in [("/metrics", sys.argv[2]), ("/api/v1/status", sys.argv[3])]:
    c, b = parse(arg)
    print(f"| `GET {name}` | {(c - c0) / n:,.0f} | {(b - b0) / n / 1024:,.0f} KB |")
print(f"\nThe run without requests: {c0:,} allocation calls, {b0 / 1024 / 1024:.1f} MB in total.")
PY
