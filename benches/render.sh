#!/usr/bin/env bash
# Render one-shot benchmark (issue 2): `elasticd render` with a `file` locator of N backends
# (a Prometheus file_sd JSON document) rendered into `builtin:nginx`, for N = 10, 1,000, 10,000
# and 100,000.
#
# For each N it measures, on the release binary:
#   - wall time with hyperfine, in two scenarios:
#       changed   the output file is deleted before each run (--prepare), so the pass renders
#                 and writes it;
#       unchanged the output is already up to date, so the pass renders, compares and writes
#                 nothing;
#   - peak RSS with /usr/bin/time -f %M, the max of $RSS_RUNS runs of each scenario;
#   - instructions of one "changed" run under valgrind --tool=callgrind (stable on a noisy
#     machine, unlike wall times; skipped with CALLGRIND=0 or when valgrind is missing).
# It prints a markdown results table and the machine it ran on. Nothing is left behind.
#
# Usage: benches/render.sh            (from anywhere; builds with `cargo build --release`)
# Env:   CARGO_TARGET_DIR  respected, like cargo does
#        SIZES             backend counts (default "10 1000 10000 100000")
#        CALLGRIND         0 to skip the instruction counts (default 1)
#        WARMUP RUNS       hyperfine --warmup / --runs (default 3 / 30)
#        RSS_RUNS          /usr/bin/time runs per scenario (default 5)
#        BIN               measure this binary instead of building (the commit shown is then the
#                          checkout's, which may not match the binary)
#        KEEP_JSON=DIR     copy the hyperfine JSON exports to DIR
# Needs: cargo, python3, hyperfine and /usr/bin/time (Debian packages `hyperfine` and `time`;
#        installed with apt-get when missing and root or sudo is available); valgrind for the
#        instruction counts (optional); nm (binutils) for the code layout line (optional).
set -euo pipefail

SIZES=${SIZES:-"10 1000 10000 100000"}
CALLGRIND=${CALLGRIND:-1}
WARMUP=${WARMUP:-3}
RUNS=${RUNS:-30}
RSS_RUNS=${RSS_RUNS:-5}

cd "$(dirname "$0")/.."
ROOT=$(pwd)
# Measure the default invocation (log level info, to stderr, discarded): no logging overrides.
unset RUST_LOG ELASTICD_LOG

die() { echo "error: $*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------------------------
need_pkgs=()
command -v hyperfine >/dev/null 2>&1 || need_pkgs+=(hyperfine)
[ -x /usr/bin/time ] || need_pkgs+=(time)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "== installing ${need_pkgs[*]}" >&2
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${need_pkgs[@]}" >&2
fi
command -v hyperfine >/dev/null 2>&1 || die "hyperfine is missing"
[ -x /usr/bin/time ] || die "/usr/bin/time is missing (Debian package \`time\`)"
command -v python3 >/dev/null 2>&1 || die "python3 is missing"
if [ "$CALLGRIND" != 0 ] && ! command -v valgrind >/dev/null 2>&1; then
  echo "== valgrind is missing: no instruction counts" >&2
  CALLGRIND=0
fi

# --- build -------------------------------------------------------------------------------------
if [ -z "${BIN:-}" ]; then
  echo "== cargo build --release" >&2
  cargo build --release --locked --quiet >&2
  target_dir=$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])') \
    || target_dir=${CARGO_TARGET_DIR:-target}
  BIN="$target_dir/release/elasticd"
fi
[ -x "$BIN" ] || die "no elasticd binary at $BIN"
case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac

# --- scratch -----------------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/elasticd-bench.XXXXXX")
cleanup() { rm -rf -- "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# A file_sd document of N backends: one group per backend, 127.x.y.z:8080 (from 127.0.0.1 up),
# each with a few labels, so the parser and the template see per-backend metadata.
gen_backends() {
  python3 - "$1" "$2" <<'EOF'
import json, sys
n, path = int(sys.argv[1]), sys.argv[2]
zones = ["zone-a", "zone-b", "zone-c"]
groups = []
for i in range(n):
    k = i + 1
    addr = "127.%d.%d.%d:8080" % ((k >> 16) & 255, (k >> 8) & 255, k & 255)
    groups.append({
        "targets": [addr],
        "labels": {"zone": zones[i % 3], "rack": "r%d" % (i % 40), "instance": "web-%05d" % i},
    })
with open(path, "w") as f:
    json.dump(groups, f, indent=1)
    f.write("\n")
EOF
}

gen_config() { # DIR
  cat >"$1/config.yaml" <<'EOF'
# Benchmark config: one service, one file locator, one built-in output, no frontend.
services:
  web:
    locators:
      - file: { path: backends.json }
outputs:
  - { template: "builtin:nginx", path: out/nginx-web.conf, vars: { service: web } }
EOF
  mkdir -p "$1/out"
}

# hyperfine JSON -> "mean median stddev min max" in ms
hf_stats() {
  python3 - "$1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))["results"][0]
print(" ".join("%.2f" % (r[k] * 1000) for k in ("mean", "median", "stddev", "min", "max")))
EOF
}

# Peak RSS in KiB: max of RSS_RUNS runs. $1 = "changed" or "unchanged".
peak_rss_kib() {
  local scenario=$1 dir=$2 max=0 kib i
  for ((i = 0; i < RSS_RUNS; i++)); do
    if [ "$scenario" = changed ]; then
      rm -f "$dir/out/nginx-web.conf" "$dir/out/nginx-web.conf.bak"
    fi
    /usr/bin/time -o "$dir/time.out" -f %M "$BIN" render --config "$dir/config.yaml" \
      >/dev/null 2>"$dir/stderr.out" || { cat "$dir/stderr.out" >&2; die "render failed"; }
    kib=$(tail -n 1 "$dir/time.out")
    if [ "$kib" -gt "$max" ]; then max=$kib; fi
  done
  echo "$max"
}

# Instructions of one "changed" run under callgrind, in millions ("-" when skipped).
instructions() {
  local dir=$1 count
  if [ "$CALLGRIND" = 0 ]; then echo "-"; return; fi
  rm -f "$dir/out/nginx-web.conf" "$dir/out/nginx-web.conf.bak"
  valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
    "$BIN" render --config "$dir/config.yaml" >/dev/null 2>"$dir/valgrind.out" \
    || { cat "$dir/valgrind.out" >&2; die "render under callgrind failed"; }
  count=$(sed -n 's/.*Collected : *\([0-9]*\).*/\1/p' "$dir/valgrind.out" | tail -n 1)
  [ -n "$count" ] || die "no instruction count in the callgrind output"
  python3 -c "import sys; print('%.1f M' % (int(sys.argv[1]) / 1e6))" "$count"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A RESULT
for n in $SIZES; do
  dir="$WORK/n$n"
  mkdir -p "$dir"
  gen_config "$dir"
  gen_backends "$n" "$dir/backends.json"
  cfg="$dir/config.yaml"
  out="$dir/out/nginx-web.conf"

  # Sanity: one pass renders every backend.
  "$BIN" render --config "$cfg" >/dev/null 2>"$dir/stderr.out" \
    || { cat "$dir/stderr.out" >&2; die "render failed for N=$n"; }
  got=$(grep -c '^ *server 127\.' "$out" || true)
  [ "$got" -eq "$n" ] || die "N=$n: expected $n server lines in the output, got $got"

  echo "== N=$n: changed" >&2
  hyperfine -N --style basic --warmup "$WARMUP" --runs "$RUNS" \
    --prepare "rm -f $out $out.bak" \
    --export-json "$dir/changed.json" \
    "$BIN render --config $cfg" >&2
  [ -s "$out" ] || die "N=$n: changed scenario did not write the output"

  echo "== N=$n: unchanged" >&2
  "$BIN" render --config "$cfg" >/dev/null 2>&1
  before=$(stat -c %Y.%i "$out")
  hyperfine -N --style basic --warmup "$WARMUP" --runs "$RUNS" \
    --export-json "$dir/unchanged.json" \
    "$BIN render --config $cfg" >&2
  [ "$(stat -c %Y.%i "$out")" = "$before" ] || die "N=$n: unchanged scenario rewrote the output"

  RESULT[$n,changed]=$(hf_stats "$dir/changed.json")
  RESULT[$n,unchanged]=$(hf_stats "$dir/unchanged.json")
  RESULT[$n,rss_changed]=$(peak_rss_kib changed "$dir")
  RESULT[$n,rss_unchanged]=$(peak_rss_kib unchanged "$dir")
  RESULT[$n,instructions]=$(instructions "$dir")
  RESULT[$n,bytes]=$(stat -c %s "$dir/backends.json")
  RESULT[$n,out_bytes]=$(stat -c %s "$out")
  if [ -n "${KEEP_JSON:-}" ]; then
    mkdir -p "$KEEP_JSON"
    cp "$dir/changed.json" "$KEEP_JSON/render-$n-changed.json"
    cp "$dir/unchanged.json" "$KEEP_JSON/render-$n-unchanged.json"
  fi
done

# --- report ------------------------------------------------------------------------------------
mb() { python3 -c "import sys; print('%.1f' % (int(sys.argv[1]) / 1024))" "$1"; }
fmt_n() { python3 -c "import sys; print(f'{int(sys.argv[1]):,}')" "$1"; }
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
# Changes to benches/ and docs/ do not change the binary.
git -C "$ROOT" diff --quiet HEAD -- . ':!benches' ':!docs' 2>/dev/null || commit="$commit (dirty tree)"

echo
echo "Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'),"\
  "Linux $(uname -r); $("$BIN" --version), commit $commit;"\
  "hyperfine -N --warmup $WARMUP --runs $RUNS; peak RSS = max of $RSS_RUNS runs per scenario;"\
  "load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)."
# The functions of linker/symbol-order.txt that this binary has, which build.rs's link laid out
# side by side: after a toolchain or dependency update without scripts/symbol-order.sh, few.
laid_out="unknown (no nm)"
if command -v nm >/dev/null 2>&1; then
  laid_out=$(nm --defined-only "$BIN" 2>/dev/null | awk '{ print $3 }' \
    | grep -cxFf <(grep -v '^#' "$ROOT/linker/symbol-order.txt") || true)
fi
echo "Code layout: $laid_out functions of linker/symbol-order.txt are in this binary."
echo
echo "| backends | wall median (changed) | wall median (unchanged) | peak RSS | instructions (changed) |"
echo "|---:|---:|---:|---:|---:|"
for n in $SIZES; do
  read -r _ cmed _ _ _ <<<"${RESULT[$n,changed]}"
  read -r _ umed _ _ _ <<<"${RESULT[$n,unchanged]}"
  rss=${RESULT[$n,rss_changed]}
  if [ "${RESULT[$n,rss_unchanged]}" -gt "$rss" ]; then rss=${RESULT[$n,rss_unchanged]}; fi
  echo "| $(fmt_n "$n") | $cmed ms | $umed ms | $(mb "$rss") MB | ${RESULT[$n,instructions]} |"
done
echo
echo "Details (ms: mean ± stddev, min-max; RSS per scenario; input and output sizes):"
echo
echo "| backends | changed mean ± sd | changed min-max | unchanged mean ± sd | unchanged min-max | RSS changed | RSS unchanged | file_sd JSON | nginx output |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for n in $SIZES; do
  read -r cmean _ csd cmin cmax <<<"${RESULT[$n,changed]}"
  read -r umean _ usd umin umax <<<"${RESULT[$n,unchanged]}"
  echo "| $(fmt_n "$n") | $cmean ± $csd | $cmin-$cmax | $umean ± $usd | $umin-$umax" \
    "| $(mb "${RESULT[$n,rss_changed]}") MB | $(mb "${RESULT[$n,rss_unchanged]}") MB" \
    "| $(mb $((RESULT[$n,bytes]))) KB | $(mb $((RESULT[$n,out_bytes]))) KB |"
done
