#!/usr/bin/env python3
"""Fleet mode benchmark (issue 14), loopback only: one etcd (Debian's etcd-server) and 1 + N
`elasticd run` daemons sharing an `exec` locator (a shell script reading a JSON file: the
"cloud"), every daemon rendering builtin:nginx with settle_min 1ms.

  propagation   ROUNDS times, the cloud's set is changed; from the leader's log line publishing
                the new revision to each follower's log line applying it (both stamped by the
                daemons' own clocks, the same machine): median and worst per round, over rounds.
  etcd writes   etcd's store revision (every write bumps it) over QUIET seconds with nothing
                changing, per refresh period.
  RSS           VmRSS of each follower, against K daemons with the same config without `cluster`
                (the locator run locally): the per-follower cost of fleet mode.

Prints markdown tables. Every process is started here and stopped by PID; nothing is left.
Usage: BIN=path/to/elasticd benches/fleet.py   Env: N (50), ROUNDS (10), QUIET (20), K (5)
BIN must be built with the `etcd` feature (default features, or --features etcd).
"""

import base64
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime

BIN = os.path.abspath(os.environ.get("BIN", "target/release/elasticd"))
N = int(os.environ.get("N", "50"))
ROUNDS = int(os.environ.get("ROUNDS", "10"))
QUIET = int(os.environ.get("QUIET", "20"))
K = int(os.environ.get("K", "5"))
REFRESH = 1  # seconds

procs = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def spawn(args, cwd, log, env=None):
    out = open(log, "wb")
    p = subprocess.Popen(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    procs.append(p)
    return p


def stop_all():
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.time() + 10
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def etcd_revision(port):
    body = json.dumps({"key": base64.b64encode(b"/").decode()}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v3/kv/range", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return int(json.load(r)["header"]["revision"])


def set_cloud(work, ips):
    tmp = os.path.join(work, "backends.tmp")
    with open(tmp, "w") as f:
        json.dump([{"targets": ips}], f)
    os.rename(tmp, os.path.join(work, "backends.json"))


def config(port, etcd_port, name, fleet):
    cluster = f"""cluster:
  name: bench
  member: {name}
  lease_ttl: 5s
  fallback_after: never
  share: [exec]
  etcd: {{ endpoints: ["http://127.0.0.1:{etcd_port}"], dial_timeout: 2s }}
""" if fleet else ""
    return f"""daemon: {{ settle_min: 1ms, settle_max: 1s, jitter: 0, backoff_max: 2s }}
server: {{ listen: ["127.0.0.1:{port}"] }}
{cluster}services:
  web:
    refresh: {REFRESH}s
    port: 8080
    locators: [exec: {{ command: ["../locate"] }}]
outputs:
  - {{ template: "builtin:nginx", path: upstream.conf, vars: {{ service: web }} }}
"""


def start_member(work, etcd_port, name, fleet=True):
    d = os.path.join(work, name)
    os.makedirs(d)
    with open(os.path.join(d, "config.yaml"), "w") as f:
        f.write(config(free_port(), etcd_port, name, fleet))
    log = os.path.join(d, "daemon.log")
    p = spawn([BIN, "run", "--config", "config.yaml", "--log", "debug"], d, log)
    return {"name": name, "dir": d, "log": log, "proc": p}


def lines(member, needle):
    with open(member["log"], errors="replace") as f:
        return [l for l in f if needle in l]


def stamp(line):
    return datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()


def rendered(member):
    try:
        with open(os.path.join(member["dir"], "upstream.conf")) as f:
            return f.read()
    except OSError:
        return ""


def wait(what, cond, limit=60, member=None):
    deadline = time.time() + limit
    while not cond():
        if time.time() > deadline:
            if member:
                with open(member["log"], errors="replace") as f:
                    sys.stderr.write(f.read()[-3000:])
            sys.exit(f"error: timed out waiting for {what}")
        time.sleep(0.05)


def main():
    if not shutil.which("etcd"):
        sys.exit("error: etcd not on PATH (Debian: etcd-server)")
    if not os.access(BIN, os.X_OK):
        sys.exit(f"error: no binary at {BIN}")
    work = tempfile.mkdtemp(prefix="elasticd-fleet-bench-")
    try:
        run(work)
    finally:
        stop_all()
        shutil.rmtree(work, ignore_errors=True)


def run(work):
    client, peer = free_port(), free_port()
    spawn(["etcd", "--name", "b", "--data-dir", os.path.join(work, "etcd"),
           "--listen-client-urls", f"http://127.0.0.1:{client}",
           "--advertise-client-urls", f"http://127.0.0.1:{client}",
           "--listen-peer-urls", f"http://127.0.0.1:{peer}",
           "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
           "--initial-cluster", f"b=http://127.0.0.1:{peer}"],
          work, os.path.join(work, "etcd.log"))

    def etcd_up():
        try:
            etcd_revision(client)
            return True
        except OSError:
            return False
    wait("etcd", etcd_up)

    with open(os.path.join(work, "locate"), "w") as f:
        f.write(f"#!/bin/sh\ncat {work}/backends.json\n")
    os.chmod(os.path.join(work, "locate"), 0o755)
    set_cloud(work, ["127.0.0.1"])

    # The first member leads (it is alone when it campaigns); then N followers.
    leader = start_member(work, client, "leader")
    wait("the leader's file", lambda: "127.0.0.1:8080" in rendered(leader), member=leader)
    followers = [start_member(work, client, f"f{i:02}") for i in range(N)]
    wait("every follower's file",
         lambda: all("127.0.0.1:8080" in rendered(m) for m in followers), 120)
    assert lines(leader, "fleet: leading"), "the first member did not lead"

    medians, worsts = [], []
    for r in range(ROUNDS):
        before = {m["name"]: len(lines(m, "applied web")) for m in followers}
        published = len(lines(leader, "fleet: published"))
        want = f"127.0.0.{r + 2}:8080"
        set_cloud(work, ["127.0.0.1", want.split(":")[0]])
        wait(f"round {r}", lambda: all(want in rendered(m) for m in followers), 30)
        wait("the log lines", lambda: all(
            len(lines(m, "applied web")) > before[m["name"]] for m in followers), 10)
        pub = stamp(lines(leader, "fleet: published")[published])
        took = [(stamp(lines(m, "applied web")[before[m["name"]]]) - pub) * 1000
                for m in followers]
        medians.append(statistics.median(took))
        worsts.append(max(took))
        time.sleep(1.5)

    rev0 = etcd_revision(client)
    time.sleep(QUIET)
    writes = etcd_revision(client) - rev0

    fleet_rss = [rss_kb(m["proc"].pid) for m in followers]
    solo = [start_member(work, client, f"solo{i}", fleet=False) for i in range(K)]
    wait("the solo daemons' files", lambda: all("127.0.0.1:8080" in rendered(m) for m in solo))
    time.sleep(3)
    solo_rss = [rss_kb(m["proc"].pid) for m in solo]
    fleet_rss = [rss_kb(m["proc"].pid) for m in followers]  # after as long a run

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    load = open("/proc/loadavg").read().split()[0]
    print(f"commit {commit}, {N} followers, {ROUNDS} rounds, load average {load}\n")
    print("| propagation: leader publish to follower applied | ms |")
    print("|---|---|")
    print(f"| median follower, median of the rounds | {statistics.median(medians):.1f} |")
    print(f"| last of the {N} followers, median of the rounds | {statistics.median(worsts):.1f} |")
    print(f"| last of the {N} followers, worst round | {max(worsts):.1f} |")
    print()
    print("| etcd writes with nothing changing | |")
    print("|---|---|")
    print(f"| in {QUIET}s ({QUIET // REFRESH} refresh periods) | {writes} |")
    print(f"| per refresh | {writes / (QUIET / REFRESH):.2f} |")
    print()
    med_f, med_s = statistics.median(fleet_rss) / 1024, statistics.median(solo_rss) / 1024
    print("| RSS per daemon (median) | MB |")
    print("|---|---|")
    print(f"| follower, fleet mode | {med_f:.1f} |")
    print(f"| same config without `cluster` | {med_s:.1f} |")
    print(f"| fleet mode's cost | {med_f - med_s:+.1f} |")


if __name__ == "__main__":
    main()
