#!/usr/bin/env bash
# AWS locator benchmark (issue 4): one `elasticd render` pass over N EC2 instances served by moto
# (a local AWS API emulator) on a loopback port, rendered into `builtin:haproxy`, in two
# scenarios:
#   ec2  an `ec2` locator whose tag filter matches N instances, each launched on its own (AWS
#        pages DescribeInstances by instance, moto by reservation: one instance per reservation
#        makes the page counts agree);
#   asg  an `asg` locator over one Auto Scaling group of N members.
#
# For each it measures, on the release binary, over $RUNS passes that find the output already up
# to date (a pass asks AWS, renders, compares and writes nothing: a daemon's steady state):
#   - wall time (mean ± σ), with /usr/bin/time; it is mostly moto building XML;
#   - elasticd's own CPU time (user + sys) and peak RSS, the max over the passes;
#   - API calls, from the `api_calls=` debug line (HTTP requests sent, retries included).
# It prints a markdown results table and the machine it ran on. Nothing is left behind.
#
# Usage: benches/aws.sh          (from anywhere; builds with `cargo build --release`)
# Env:   N                 instances (default 5000)
#        RUNS              timed passes per scenario (default 3: moto takes minutes per pass at
#                          5,000 instances; a first, untimed pass writes the file)
#        BIN               measure this binary instead of building
#        SCENARIOS         which to run (default "ec2 asg")
#        ELASTICD_VENV     virtualenv with moto[server] (default /var/tmp/elasticd-venv, as made
#                          by scripts/test.sh; created here when missing)
#        CARGO_TARGET_DIR  respected, like cargo does
# Needs: cargo, python3 and /usr/bin/time (Debian package `time`, installed with apt-get when
#        missing and root or sudo is available).
set -euo pipefail

N=${N:-5000}
RUNS=${RUNS:-3}
MOTO_VERSION="5.2.5"

cd "$(dirname "$0")/.."
unset RUST_LOG ELASTICD_LOG
# Plain log lines: the `api_calls=` count is read from them.
export NO_COLOR=1

die() { echo "error: $*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------------------------
if [ ! -x /usr/bin/time ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "== installing time" >&2
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends time >&2
fi
[ -x /usr/bin/time ] || die "/usr/bin/time is missing (Debian package \`time\`)"

venv="${ELASTICD_VENV:-/var/tmp/elasticd-venv}"
if ! "$venv/bin/python" -c "import sys, moto; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
  echo "== installing moto[server]==$MOTO_VERSION into $venv" >&2
  python3 -m venv --clear "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2
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
[ -x "$BIN" ] || die "no binary at $BIN"

# --- moto --------------------------------------------------------------------------------------
# One emulator per scenario: moto slows down as it holds more instances, and each scenario should
# see only its own.
work=$(mktemp -d -t elasticd-aws-bench.XXXXXX)
moto_pids=()
cleanup() {
  for pid in "${moto_pids[@]}"; do
    kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  rm -rf "$work"
}
trap cleanup EXIT

start_moto() { # scenario -> sets $port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$work/moto-$1.log" 2>&1 &
  local pid=$!
  moto_pids+=("$pid")
  for _ in $(seq 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || die "moto_server exited: $(cat "$work/moto-$1.log")"
    sleep 0.1
  done
  die "moto_server did not answer on port $port"
}

# Only loopback is ever contacted: the SDK talks to moto, and the 10.x addresses moto hands out
# are only written into the rendered file.
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true
export AWS_CONFIG_FILE="$work/none" AWS_SHARED_CREDENTIALS_FILE="$work/none"
unset AWS_PROFILE AWS_REGION AWS_DEFAULT_REGION AWS_SESSION_TOKEN AWS_ROLE_ARN

seed() { # scenario port
  echo "== $1: seeding $N instances (takes a while: moto slows down as it fills up)" >&2
  local seed_start
  seed_start=$(date +%s)
  "$venv/bin/python" - "$1" "$2" "$N" >&2 <<'PY'
import sys
from concurrent.futures import ThreadPoolExecutor
import boto3
from botocore.config import Config

scenario, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
kw = dict(endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
          config=Config(read_timeout=1800, retries={"max_attempts": 1}))
ec2 = boto3.client("ec2", **kw)
if scenario == "ec2":
    tags = [{"ResourceType": "instance",
             "Tags": [{"Key": "role", "Value": "bench"}, {"Key": "Name", "Value": "bench"}]}]
    # Spread over three zones: moto gives each zone's default subnet a /20 (4,091 addresses).
    def launch(i):
        ec2.run_instances(ImageId="ami-12c6146b", InstanceType="t3.micro", MinCount=1, MaxCount=1,
                          TagSpecifications=tags,
                          Placement={"AvailabilityZone": "us-east-1" + "abc"[i % 3]})
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(launch, range(n)))
else:
    asg = boto3.client("autoscaling", **kw)
    ec2.create_launch_template(LaunchTemplateName="bench",
                               LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"})
    asg.create_auto_scaling_group(AutoScalingGroupName="bench-asg", MinSize=0, MaxSize=n,
                                  DesiredCapacity=n, AvailabilityZones=["us-east-1a"],
                                  LaunchTemplate={"LaunchTemplateName": "bench", "Version": "$Latest"})
PY
  echo "   seeded in $(( $(date +%s) - seed_start ))s" >&2
}

config() { # scenario port locator
  mkdir -p "$work/$1"
  cat >"$work/$1/config.yaml" <<EOF
aws: { region: us-east-1, endpoint_url: "http://127.0.0.1:$2", operation_timeout: 120s, attempt_timeout: 120s }
services:
  web:
    port: 8080
    timeout: 300s
    locators:
      - $3
outputs:
  - { template: "builtin:haproxy", path: web.cfg, vars: { service: web } }
EOF
}

rows=()
for scenario in ${SCENARIOS:-ec2 asg}; do
  dir="$work/$scenario"
  start_moto "$scenario"
  seed "$scenario" "$port"
  case $scenario in
    ec2) config ec2 "$port" '{ ec2: { filters: { "tag:role": bench } } }' ;;
    asg) config asg "$port" '{ asg: { names: [bench-asg] } }' ;;
    *) die "unknown scenario $scenario" ;;
  esac
  echo "== $scenario: measuring" >&2
  # First pass writes the file and reports the calls; the timed passes find it up to date.
  (cd "$dir" && "$BIN" --log elasticd=debug render --config config.yaml 2>"$dir/debug.log") \
    || die "$scenario: first pass failed: $(cat "$dir/debug.log")"
  # moto draws private IPs at random from a /20, so among thousands of instances a few share an
  # address; elasticd keeps one backend per address and port. Count what the locator saw.
  seen=$(grep -oE '(instances|members)=[0-9]+' "$dir/debug.log" | tail -1 | cut -d= -f2)
  [ "$seen" = "$N" ] || die "$scenario: the locator saw ${seen:-no} instances, expected $N: $(cat "$dir/debug.log")"
  servers=$(grep -c '^    server ' "$dir/web.cfg" || true)
  calls=$(grep -o 'api_calls=[0-9]*' "$dir/debug.log" | tail -1 | cut -d= -f2)
  # Each timed pass runs under /usr/bin/time: wall time, elasticd's own CPU time, peak RSS.
  : >"$dir/times"
  for _ in $(seq "$RUNS"); do
    (cd "$dir" && /usr/bin/time -f "%e %U %S %M" -o "$dir/time" \
      "$BIN" render --config config.yaml 2>"$dir/pass.log") \
      || die "$scenario: a timed pass failed: $(cat "$dir/pass.log")"
    cat "$dir/time" >>"$dir/times"
  done
  read -r wall cpu rss < <(python3 - "$dir/times" <<'PY'
import statistics, sys
rows = [[float(x) for x in line.split()] for line in open(sys.argv[1]) if line.strip()]
walls = [r[0] for r in rows]
sd = statistics.stdev(walls) if len(walls) > 1 else 0.0
print(f"{statistics.mean(walls):.2f}±{sd:.2f}", round(max((r[1] + r[2]) * 1000 for r in rows)),
      round(max(r[3] for r in rows) / 1024))
PY
)
  rows+=("| $scenario | $N | $servers | $calls | ${wall/±/ ± } | $cpu | $rss |")
done

echo
echo "| scenario | instances | servers rendered | API calls per pass | wall time per pass, s (mean ± σ) | elasticd CPU per pass, ms (max) | peak RSS, MiB (max) |"
echo "|---|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
echo
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); moto $MOTO_VERSION; $N instances, $RUNS runs."
