#!/usr/bin/env bash
# Health-check benchmark (issue 13), on the release binary. For each N in $SIZES, N HTTP
# backends on 127.0.0.1 (one listening port each, served by one Python asyncio process, HTTP/1.1
# keep-alive unless a request says `Connection: close`) are probed by `elasticd run`
# (`health: { http: {} }`, interval 2s, timeout 1s, rise 2, fall 3):
#   steady      after a warm-up of $WARMUP seconds, CPU time of elasticd over $SECONDS_RUN as a
#               share of one core, RSS at the start and end of that window (VmRSS, and VmHWM as
#               the peak), and probes answered per second (counted by the backends);
#   detection   one backend dies (its port closes and its open connections are reset); the time
#               until the rendered file no longer lists it (expected: up to interval x fall +
#               settle_min + the time to render and write).
# Prints a markdown table. Nothing is left behind; every process is stopped by PID.
#
# With DURATION set (seconds), each size instead runs that long after the warm-up and prints
# one row every $SAMPLE seconds: RSS, peak RSS, CPU share and probes/s over that sample, so
# that growth over time (per-probe allocations that are never freed) shows as a curve.
#
# With CALLGRIND set, the daemon runs under valgrind's callgrind instead (use small SIZES, e.g.
# 200: it runs some 50x slower): the counters are zeroed after the warm-up and dumped after
# $SECONDS_RUN, and the row gives the daemon's user-space instructions per probe answered in
# that window, a figure that does not depend on the machine's load (the kernel's share of a probe
# is not counted). The dump stays in $CALLGRIND_OUT (default /tmp/health-callgrind) for
# callgrind_annotate.
#
# Usage: benches/health.sh     Env: SIZES (default "1000 10000"), SECONDS_RUN (default 60),
#                                   WARMUP (default 10), REUSE (reuse_connection; unset: the default),
#                                   DURATION (default unset: the table), SAMPLE (default 60),
#                                   CALLGRIND (default unset), CALLGRIND_OUT,
#                                   CARGO_TARGET_DIR (respected), BIN (use this binary instead)
set -euo pipefail
SIZES=${SIZES:-"1000 10000"}
SECONDS_RUN=${SECONDS_RUN:-60}
WARMUP=${WARMUP:-10}
REUSE=${REUSE:-}
reuse_key=${REUSE:+, reuse_connection: $REUSE}
DURATION=${DURATION:-}
SAMPLE=${SAMPLE:-60}
CALLGRIND=${CALLGRIND:-}
CALLGRIND_OUT=${CALLGRIND_OUT:-/tmp/health-callgrind}
cd "$(dirname "$0")/.."
unset RUST_LOG ELASTICD_LOG

. benches/lib.sh
bench_binary

# 10,000 listeners need more descriptors than the usual 1024: raise the soft limit to the hard.
ulimit -n "$(ulimit -Hn)"

# The backends: N ports, each answering `200 ok` on keep-alive connections; ports.json lists
# them; SIGUSR1 kills the first (its listener closes and its open connections are reset, as when
# a process dies); the request count is written to `requests` every second.
cat > "$WORK/backends.py" <<'PY'
import asyncio, json, signal, socket, struct, sys
n, out = int(sys.argv[1]), sys.argv[2]
count = 0
first = set()
def handler(index):
    async def handle(reader, writer):
        global count
        if index == 0:
            first.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                count += 1
                close = b"connection: close" in head.lower()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                             + (b"Connection: close\r\n" if close else b"") + b"\r\nok")
                await writer.drain()
                if close:
                    break
        except Exception:
            pass
        finally:
            first.discard(writer)
            writer.close()
    return handle
async def main():
    servers = [await asyncio.start_server(handler(i), "127.0.0.1", 0, backlog=64)
               for i in range(n)]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    with open(out + "/ports.json", "w") as f:
        json.dump(ports, f)
    def kill_first():
        servers[0].close()
        for w in list(first):
            sock = w.get_extra_info("socket")
            # SO_LINGER 0: the close sends a reset, as the kernel does for a dead process.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.transport.abort()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, kill_first)
    while True:
        await asyncio.sleep(1)
        with open(out + "/requests", "w") as f:
            f.write(str(count))
asyncio.run(main())
PY

if [ -n "$CALLGRIND" ]; then
  echo "| backends | seconds | probes answered | instructions (user space) | instructions per probe |"
  echo "|---|---|---|---|---|"
elif [ -n "$DURATION" ]; then
  echo "| backends | seconds | RSS | peak RSS | CPU in the sample (user + system) | probes/s |"
  echo "|---|---|---|---|---|---|"
else
  echo "| backends | CPU, share of one core (user + system) | RSS start → end (peak) | probes/s | detection |"
  echo "|---|---|---|---|---|"
fi
for n in $SIZES; do
  dir="$WORK/$n"
  mkdir -p "$dir/out"
  cd "$dir"
  python3 "$WORK/backends.py" "$n" "$dir" &
  SERVER_PID=$!
  for _ in $(seq 600); do [ -s ports.json ] && break; sleep 0.1; done
  python3 -c "import json; ports = json.load(open('ports.json')); print(json.dumps([{'targets': ['127.0.0.1:%d' % p for p in ports]}]))" > backends.json
  first=$(python3 -c "import json; print('127.0.0.1:%d' % json.load(open('ports.json'))[0])")
  cat > config.yaml <<YAML
services:
  web:
    refresh: 1h
    locators: [file: { path: backends.json }]
    health: { http: { path: /health$reuse_key }, interval: 2s, timeout: 1s, rise: 2, fall: 3, initial: healthy }
outputs:
  - { template: "builtin:nginx", path: out/upstream.conf, vars: { service: web } }
YAML
  if [ -n "$CALLGRIND" ]; then
    mkdir -p "$CALLGRIND_OUT"
    rm -f "$CALLGRIND_OUT/callgrind.out.$n".*
    valgrind --tool=callgrind --callgrind-out-file="$CALLGRIND_OUT/callgrind.out.$n" \
      "$BIN" run --config config.yaml --log info 2> daemon.log &
    DAEMON_PID=$!
    sleep "$WARMUP"
    callgrind_control -z "$DAEMON_PID" > /dev/null
    req0=$(cat requests)
    sleep "$SECONDS_RUN"
    req1=$(cat requests)
    callgrind_control -d "$DAEMON_PID" > /dev/null
    kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null || true; DAEMON_PID=""
    kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
    # The dump taken on request is the first numbered one; the one at exit covers the stop.
    dump=$(ls "$CALLGRIND_OUT/callgrind.out.$n".* | sort | head -n 1)
    ir=$(awk '/^(summary|totals):/ { print $2; exit }' "$dump")
    awk -v n="$n" -v s="$SECONDS_RUN" -v q0="$req0" -v q1="$req1" -v ir="$ir" 'BEGIN {
      printf "| %d | %d | %d | %.0f | %.0f |\n", n, s, q1 - q0, ir, ir / (q1 - q0)
    }'
    continue
  fi
  "$BIN" run --config config.yaml --log info 2> daemon.log &
  DAEMON_PID=$!
  sleep "$WARMUP"
  if [ -n "$DURATION" ]; then
    start=$(date +%s)
    user0=$(user_seconds "$DAEMON_PID"); sys0=$(system_seconds "$DAEMON_PID"); req0=$(cat requests)
    while :; do
      sleep "$SAMPLE"
      user1=$(user_seconds "$DAEMON_PID"); sys1=$(system_seconds "$DAEMON_PID"); req1=$(cat requests)
      awk -v n="$n" -v t="$(( $(date +%s) - start ))" -v r="$(status_kb "$DAEMON_PID" VmRSS)" \
          -v h="$(status_kb "$DAEMON_PID" VmHWM)" -v u0="$user0" -v u1="$user1" -v y0="$sys0" \
          -v y1="$sys1" -v q0="$req0" -v q1="$req1" -v s="$SAMPLE" 'BEGIN {
        u = (u1 - u0) / s * 100; y = (y1 - y0) / s * 100
        printf "| %d | %d | %.1f MB | %.1f MB | %.2f%% (%.2f + %.2f) | %.0f |\n",
          n, t, r / 1024, h / 1024, u + y, u, y, (q1 - q0) / s
      }'
      user0=$user1; sys0=$sys1; req0=$req1
      [ "$(( $(date +%s) - start ))" -ge "$DURATION" ] && break
    done
    kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null || true; DAEMON_PID=""
    kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
    continue
  fi
  user0=$(user_seconds "$DAEMON_PID"); sys0=$(system_seconds "$DAEMON_PID")
  rss0=$(status_kb "$DAEMON_PID" VmRSS)
  req0=$(cat requests)
  sleep "$SECONDS_RUN"
  user1=$(user_seconds "$DAEMON_PID"); sys1=$(system_seconds "$DAEMON_PID")
  rss1=$(status_kb "$DAEMON_PID" VmRSS)
  hwm=$(status_kb "$DAEMON_PID" VmHWM)
  req1=$(cat requests)
  grep -q "$first" out/upstream.conf || { echo "error: $first is not rendered" >&2; exit 1; }
  kill -USR1 "$SERVER_PID"
  t0=$(date +%s.%N)
  for _ in $(seq 3000); do grep -q "$first" out/upstream.conf || break; sleep 0.01; done
  t1=$(date +%s.%N)
  grep -q "$first" out/upstream.conf && { echo "error: $first never left the file" >&2; exit 1; }
  kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null || true; DAEMON_PID=""
  kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
  awk -v n="$n" -v u0="$user0" -v u1="$user1" -v y0="$sys0" -v y1="$sys1" -v s="$SECONDS_RUN" -v r0="$rss0" -v r1="$rss1" \
      -v h="$hwm" -v q0="$req0" -v q1="$req1" -v t0="$t0" -v t1="$t1" 'BEGIN {
    u = (u1 - u0) / s * 100; y = (y1 - y0) / s * 100
    printf "| %d | %.2f%% (%.2f + %.2f) | %.1f → %.1f MB (%.1f) | %.0f | %.2f s |\n",
      n, u + y, u, y, r0 / 1024, r1 / 1024, h / 1024, (q1 - q0) / s, t1 - t0
  }'
done
