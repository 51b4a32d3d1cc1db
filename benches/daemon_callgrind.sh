#!/usr/bin/env bash
# Daemon at scale under callgrind (issue 15): the instructions of an unchanged answer and of an
# applied change, which are stable on a loaded machine where CPU times are not. The set-up is
# benches/daemon_scale.sh's: one service of $BACKENDS backends (10,000) from a `file` locator
# refreshing every second into builtin:nginx, settle 100ms..1s, a reload command.
#   quiet    after start-up, the counters are zeroed and $QUIET_SECONDS (20) pass with nothing
#            changing: instructions per unchanged answer = the total over the answers taken
#            (the calls of the daemon's on_located, from the profile);
#   changes  zeroed again, then $CHANGES (4) times one backend is replaced and $CHANGE_EVERY (6)
#            seconds pass: instructions per applied change = the total, less the answers of
#            those seconds at the quiet rate, per change (the reparses of the changed file, in
#            its first seconds, count towards the change).
# Prints a markdown table and the top functions (inclusive) of each part; the profiles stay in
# $OUT (default: a scratch directory, removed) for callgrind_annotate.
#
# Usage: BIN=target/release/elasticd benches/daemon_callgrind.sh
#        Env: BACKENDS (10000), QUIET_SECONDS (20), CHANGES (4), CHANGE_EVERY (6), OUT
set -euo pipefail
BACKENDS=${BACKENDS:-10000}
QUIET_SECONDS=${QUIET_SECONDS:-20}
CHANGES=${CHANGES:-4}
CHANGE_EVERY=${CHANGE_EVERY:-6}
cd "$(dirname "$0")/.."
unset RUST_LOG ELASTICD_LOG
command -v valgrind > /dev/null || { echo "error: valgrind is not installed" >&2; exit 1; }

. benches/lib.sh
bench_binary
OUT=${OUT:-$WORK/profiles}
mkdir -p "$OUT"
OUT=$(realpath "$OUT")

cd "$WORK"
scale_write_set 0
scale_config
valgrind --tool=callgrind --dump-instr=no --trace-children=no \
  --callgrind-out-file="$OUT/callgrind.out.%p" \
  "$BIN" run --config config.yaml --log info 2> daemon.log &
DAEMON_PID=$!
for _ in $(seq 1200); do [ -s reloads ] && break; sleep 0.1; done
[ -s reloads ] || { echo "error: the daemon never applied; its log:" >&2; cat daemon.log >&2; exit 1; }
# Past the file locator's settle margin (3 s), so that unchanged answers are reused.
sleep 5

callgrind_control -z "$DAEMON_PID" > /dev/null
sleep "$QUIET_SECONDS"
callgrind_control -d quiet "$DAEMON_PID" > /dev/null
applies0=$(grep -c ' applied ' daemon.log || true)
for i in $(seq "$CHANGES"); do
  scale_write_set "$i"
  sleep "$CHANGE_EVERY"
done
callgrind_control -d changes "$DAEMON_PID" > /dev/null
applies1=$(grep -c ' applied ' daemon.log || true)
stop_daemon
sleep 1

python3 - "$OUT" "$CHANGES" "$((applies1 - applies0))" "$BACKENDS" <<'PY'
import glob, re, sys
out, changes, applies, backends = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

def profile(part):
    """Total instructions of the dump named `part`, and how many answers it took: the calls of
    a function each answer goes through once (the most called of a few, as inlining may hide
    some)."""
    for f in sorted(glob.glob(f"{out}/callgrind.out.*")):
        text = open(f, errors="replace").read()
        if not re.search(rf"^desc: Trigger: .*\b{part}\b", text, re.M):
            continue
        m = re.search(r"^summary: (\d+)", text, re.M) or re.search(r"^totals: (\d+)", text, re.M)
        total = int(m.group(1)) if m else 0
        names, target, calls = {}, "", {}
        for line in text.splitlines():
            m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?$", line)
            if m:
                if m.group(3):
                    names[m.group(2)] = m.group(3)
                if m.group(1) == "cfn":
                    target = names.get(m.group(2), "")
                continue
            if line.startswith("calls="):
                for key in ANSWER_MARKS:
                    # The function itself, not a closure or a drop_in_place<...> of it.
                    if target.endswith(key):
                        calls[key] = calls.get(key, 0) + int(line[6:].split()[0])
        return total, max(calls.values(), default=0)
    return 0, 0

ANSWER_MARKS = ["Daemon::on_located", "judge::judge_service", "Book::located", "Daemon::start_locate"]

quiet, answers = profile("quiet")
moved, answers_then = profile("changes")
per_answer = quiet / max(answers, 1)
per_change = (moved - per_answer * answers_then) / max(changes, 1)
print(f"### Daemon at scale under callgrind: {backends:,} backends\n")
print("| unchanged answers | instructions per unchanged answer | changes (applied) | instructions per applied change |")
print("|---:|---:|---:|---:|")
print(f"| {answers} | {per_answer / 1e6:.2f} M | {changes} ({applies}) | {per_change / 1e6:.2f} M |\n")
PY
for part in quiet changes; do
  f=$(grep -l "^desc: Trigger: .*$part" "$OUT"/callgrind.out.* | head -1)
  echo "#### $part: top functions, inclusive"
  echo '```'
  # (head closes the pipe early; that is not a failure)
  callgrind_annotate --inclusive=yes "$f" 2>/dev/null | sed -n '/^Ir/,$p' | head -45 | cut -c1-160 || true
  echo '```'
done
