# Shared set-up of the bench scripts, sourced (not run) after they `cd` to the repository root:
# the binary to measure, a scratch directory and the processes to stop on exit, and readers of
# /proc for CPU time and memory.

# Sets BIN to the binary to measure: $BIN when given (relative to the repository root), else the
# release build, made now with the cargo flags given as arguments.
bench_binary() {
  if [ -z "${BIN:-}" ]; then
    echo "== cargo build --release --locked $*" >&2
    cargo build --release --locked --quiet "$@" >&2
    local target_dir
    target_dir=$(cargo metadata --format-version 1 --no-deps \
      | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])') \
      || target_dir=${CARGO_TARGET_DIR:-target}
    BIN="$target_dir/release/elasticd"
  fi
  [ -x "$BIN" ] || { echo "error: no elasticd binary at $BIN" >&2; exit 1; }
  BIN=$(realpath "$BIN")
}

# The scratch directory, removed on exit, and the processes stopped on exit (by PID only):
# DAEMON_PID and SERVER_PID as the scripts set them.
WORK=$(mktemp -d)
DAEMON_PID=""
SERVER_PID=""
stop_pid() {
  if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
  fi
}
stop_daemon() {
  stop_pid "$DAEMON_PID"
  DAEMON_PID=""
}
bench_cleanup() {
  stop_daemon
  stop_pid "$SERVER_PID"
  rm -rf "$WORK"
}
trap bench_cleanup EXIT

clk=$(getconf CLK_TCK)
# utime + stime of a pid, in seconds.
cpu_seconds() { awk -v clk="$clk" '{ print ($14 + $15) / clk }' "/proc/$1/stat"; }
# utime of a pid, in seconds.
user_seconds() { awk -v clk="$clk" '{ print $14 / clk }' "/proc/$1/stat"; }
# stime of a pid, in seconds.
system_seconds() { awk -v clk="$clk" '{ print $15 / clk }' "/proc/$1/stat"; }
# CPU time of a pid's live threads in nanoseconds (the scheduler's own sum, not clock ticks of
# 10 ms): "NS TIDS", where TIDS lists the threads summed, so that a caller can tell when one
# ended between two readings (its time is then lost from the sum).
cpu_ns() {
  local total=0 tids="" t v
  for t in /proc/"$1"/task/*; do
    read -r v _ < "$t/schedstat" 2>/dev/null || continue
    total=$((total + v)); tids="$tids${tids:+,}${t##*/}"
  done
  echo "$total $tids"
}
# Minor page faults of a pid so far.
minor_faults() { awk '{ print $10 }' "/proc/$1/stat"; }
# A field of /proc/PID/status in kB: status_kb PID VmRSS.
status_kb() { awk -v key="$2:" '$1 == key { print $2 }' "/proc/$1/status"; }

# daemon_scale.sh and daemon_callgrind.sh, in $WORK: the file_sd file of $BACKENDS targets (one
# group) with target number $1 replaced by a new address (0: none replaced) ...
scale_write_set() {
  python3 - "$BACKENDS" "$1" > web.json.tmp <<'PY'
import json, sys
n, k = int(sys.argv[1]), int(sys.argv[2])
targets = ["127.%d.%d.%d:8080" % (i >> 16 & 255, i >> 8 & 255, i & 255 or 1) for i in range(n)]
if k:
    targets[k % n] = "127.200.%d.%d:8080" % (k >> 8 & 255, k & 255)
print(json.dumps([{"targets": targets}]))
PY
  mv web.json.tmp web.json
}
# ... and their config: one service refreshing every second into builtin:nginx, settle 100ms-1s.
scale_config() {
  cat > config.yaml <<'YAML'
daemon: { settle_min: 100ms, settle_max: 1s }
services:
  web: { refresh: 1s, locators: [file: { path: web.json }] }
frontends:
  fe: { reload: { command: [sh, -c, "echo reload >> reloads"] } }
outputs:
  - { template: "builtin:nginx", path: web.conf, frontend: fe, vars: { service: web } }
YAML
}
