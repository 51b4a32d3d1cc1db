#!/usr/bin/env bash
# Daemon at scale (issue 15), on the release binary: one service of $BACKENDS backends (10,000)
# from a `file` locator refreshing every second into builtin:nginx, with one backend replaced every
# $CHANGE_EVERY seconds (5), for $IDLE_SECONDS (60 by default; 3600 for the hour of the issue).
#   quiet    the first $QUIET_SECONDS (20) nothing changes: CPU per unchanged answer (locate,
#            guard, "same set", status) is the daemon's CPU time over the refreshes it ran;
#   changes  then the changes: CPU per applied change is the CPU time beyond the unchanged
#            answers', per change; the wall time per apply is the `applied ... in N ms` lines;
#            the CPU times are the scheduler's nanoseconds (exact; clock ticks of 10 ms if a
#            thread ended), and each also shows its system (kernel) part in ticks; the minor
#            page faults per applied change are counted the same way too;
#   RSS      VmRSS every 5 s over the whole run: first, lowest, highest, last, and VmHWM.
# Prints markdown tables. Nothing is left behind; the daemon is stopped by PID.
#
# Usage: BIN=target/release/elasticd benches/daemon_scale.sh
#        Env: BACKENDS (10000), IDLE_SECONDS (60), CHANGE_EVERY (5), QUIET_SECONDS (20)
set -euo pipefail
BACKENDS=${BACKENDS:-10000}
IDLE_SECONDS=${IDLE_SECONDS:-60}
CHANGE_EVERY=${CHANGE_EVERY:-5}
QUIET_SECONDS=${QUIET_SECONDS:-20}
cd "$(dirname "$0")/.."
unset RUST_LOG ELASTICD_LOG

. benches/lib.sh
bench_binary

cd "$WORK"
scale_write_set 0
scale_config
"$BIN" run --config config.yaml --log info 2> daemon.log &
DAEMON_PID=$!
for _ in $(seq 300); do [ -s reloads ] && break; sleep 0.1; done
[ -s reloads ] || { echo "error: the daemon never applied; its log:" >&2; cat daemon.log >&2; exit 1; }
sleep 3

: > rss
sample() { echo "$(date +%s.%N) $(status_kb "$DAEMON_PID" VmRSS)" >> rss; }
sample
ns0=$(cpu_ns "$DAEMON_PID")
cpu0=$(cpu_seconds "$DAEMON_PID"); sys0=$(system_seconds "$DAEMON_PID"); t0=$(date +%s.%N)
flt0=$(minor_faults "$DAEMON_PID")
end=$(( $(date +%s) + QUIET_SECONDS ))
while [ "$(date +%s)" -lt "$end" ]; do sleep 5; sample; done
ns1=$(cpu_ns "$DAEMON_PID")
cpu1=$(cpu_seconds "$DAEMON_PID"); sys1=$(system_seconds "$DAEMON_PID"); t1=$(date +%s.%N)
flt1=$(minor_faults "$DAEMON_PID")

applies0=$(grep -c ' applied ' daemon.log || true)
changes=0
end=$(( $(date +%s) + IDLE_SECONDS - QUIET_SECONDS ))
next_sample=$(( $(date +%s) + 5 ))
while [ "$(date +%s)" -lt "$end" ]; do
  changes=$((changes + 1))
  scale_write_set "$changes"
  sleep "$CHANGE_EVERY"
  if [ "$(date +%s)" -ge "$next_sample" ]; then sample; next_sample=$(( $(date +%s) + 5 )); fi
done
sleep 2
ns2=$(cpu_ns "$DAEMON_PID")
cpu2=$(cpu_seconds "$DAEMON_PID"); sys2=$(system_seconds "$DAEMON_PID"); t2=$(date +%s.%N)
flt2=$(minor_faults "$DAEMON_PID")
sample
hwm=$(status_kb "$DAEMON_PID" VmHWM)
kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID" || true; DAEMON_PID=""
applies1=$(grep -c ' applied ' daemon.log || true)

python3 - "$cpu0" "$cpu1" "$cpu2" "$t0" "$t1" "$t2" "$changes" "$((applies1 - applies0))" \
  "$hwm" "$BACKENDS" "$IDLE_SECONDS" "$sys0" "$sys1" "$sys2" "$flt0" "$flt1" "$flt2" \
  "$ns0" "$ns1" "$ns2" <<'PY'
import re, statistics, sys
cpu0, cpu1, cpu2, t0, t1, t2 = map(float, sys.argv[1:7])
changes, applies, hwm, backends, secs = map(int, sys.argv[7:12])
sys0, sys1, sys2 = map(float, sys.argv[12:15])
flt0, flt1, flt2 = map(int, sys.argv[15:18])
quiet_wall = t1 - t0
change_wall = t2 - t1
# The scheduler's nanoseconds of the live threads are exact, where the clock ticks are 10 ms
# steps: over a 20 s quiet phase those make the answer rate, and so the change figure, move by
# several ms. They hold while every thread read at one point is still there at the next (a
# thread that ends takes its time with it); else the ticks are used.
(ns0, tids0), (ns1, tids1), (ns2, tids2) = [
    (int(a.split()[0]), set(a.split()[1].split(","))) for a in sys.argv[18:21]]
if tids0 <= tids1 <= tids2:
    per_answer = (ns1 - ns0) / 1e9 / quiet_wall  # one refresh a second
    per_change = ((ns2 - ns1) / 1e9 - per_answer * change_wall) / max(changes, 1)
else:
    print("note: a thread ended during the run; the CPU figures are clock ticks (10 ms steps)\n")
    per_answer = (cpu1 - cpu0) / quiet_wall
    per_change = ((cpu2 - cpu1) - per_answer * change_wall) / max(changes, 1)
# The kernel's part (reads, writes and fsyncs, the reload's fork, page faults), the same way.
sys_answer = (sys1 - sys0) / quiet_wall
sys_change = ((sys2 - sys1) - sys_answer * change_wall) / max(changes, 1)
flt_answer = (flt1 - flt0) / quiet_wall
flt_change = ((flt2 - flt1) - flt_answer * change_wall) / max(changes, 1)
walls = []
for line in open("daemon.log"):
    m = re.search(r" applied .* in (\d+) ms", line)
    if m:
        walls.append(int(m.group(1)))
walls = walls[1:]  # the first is start-up
rss = [int(l.split()[1]) for l in open("rss") if len(l.split()) == 2]
print(f"### Daemon at scale: {backends:,} backends, refresh 1s, {secs}s, a change every few seconds\n")
print("| unchanged answer, CPU | of which system | applied changes | CPU per applied change | of which system | minor faults per change | apply wall, median | worst |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|")
med = f"{statistics.median(walls)} ms" if walls else "n/a"
worst = f"{max(walls)} ms" if walls else "n/a"
print(f"| {per_answer * 1000:.2f} ms | {sys_answer * 1000:.2f} ms | {applies} of {changes} | {per_change * 1000:.1f} ms | {sys_change * 1000:.1f} ms | {flt_change:,.0f} | {med} | {worst} |\n")
print("| RSS first | lowest | highest | last | peak (VmHWM) | samples |")
print("|---:|---:|---:|---:|---:|---:|")
print(f"| {rss[0]/1024:.1f} MiB | {min(rss)/1024:.1f} MiB | {max(rss)/1024:.1f} MiB | {rss[-1]/1024:.1f} MiB | {hwm/1024:.1f} MiB | {len(rss)} |\n")
PY
