#!/usr/bin/env python3
"""Push registration benchmark (issue 12), on a release binary, loopback only.

  registrations  N leases (ttl 1h) PUT by T threads over keep-alive connections: per second;
                 the daemon's RSS before and after, per registration.
  renewals       every lease renewed (POST .../renew), R rounds, by T threads: per second, with
                 the daemon converging meanwhile (its /healthz answered).
  latency        one registration at a time, ROUNDS times: from the PUT to the reload command
                 running, against the settle window (settle_min); the rest is elasticd's own.

Prints markdown tables. The daemon is started here and stopped by PID; nothing is left behind.
Usage: BIN=target/release/elasticd benches/registry.py   Env: N (10000), T (8), R (3), ROUNDS (20)
"""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN = os.environ.get("BIN", "target/release/elasticd")
N = int(os.environ.get("N", "10000"))
T = int(os.environ.get("T", "8"))
R = int(os.environ.get("R", "3"))
ROUNDS = int(os.environ.get("ROUNDS", "20"))
TOKEN = "bench-token"
SETTLE_MIN = 0.2


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


def address(i):
    return f"127.{(i >> 16) & 255}.{(i >> 8) & 255}.{(i & 255) or 1}"


class Client:
    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    def call(self, method, path, body=None):
        self.conn.request(method, path, body=body, headers=self.headers)
        r = self.conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"{method} {path}: {r.status} {data[:200]!r}")
        return data


def lease(i, ttl="1h"):
    return json.dumps({"address": address(i), "port": 9000 + (i % 1000), "ttl": ttl, "environment": "bench"})


def in_threads(port, work):
    """Runs work(client, index) for every index, split over T threads; the seconds it took."""
    errors = []

    def run(part):
        c = Client(port)
        try:
            for i in part:
                work(c, i)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    parts = [range(k, N, T) for k in range(T)]
    threads = [threading.Thread(target=run, args=(p,)) for p in parts]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - start
    if errors:
        raise errors[0]
    return took


def latency(port, work, tag):
    """ROUNDS times: one registration (replacing the last), and the time until the reload runs."""
    c = Client(port)
    latencies = []
    reloads = os.path.join(work, "reloads")
    for k in range(ROUNDS):
        before = open(reloads).read().count("\n") if os.path.exists(reloads) else 0
        t0 = time.time()
        c.call("PUT", f"/api/v1/registry/web/lat-{tag}", lease(N + k))
        while True:
            lines = open(reloads).read().split() if os.path.exists(reloads) else []
            if len(lines) > before:
                latencies.append(float(lines[-1]) - t0)
                break
            time.sleep(0.002)
        time.sleep(0.3)
    return sorted(latencies)


def main():
    work = tempfile.mkdtemp()
    port = free_port()
    with open(os.path.join(work, "token"), "w") as f:
        f.write(TOKEN + "\n")
    os.chmod(os.path.join(work, "token"), 0o600)
    with open(os.path.join(work, "config.yaml"), "w") as f:
        f.write(f"""environment: bench
daemon: {{ settle_min: {int(SETTLE_MIN * 1000)}ms, settle_max: 1s, jitter: 0 }}
server: {{ listen: ["127.0.0.1:{port}"], token_file: token }}
services:
  web:
    refresh: 1h
    port: 8080
    guard: {{ min_backends: 0 }}
    locators: [registry: {{ max_registrations: 20000 }}]
frontends:
  fe: {{ reload: {{ command: [sh, -c, "date +%s.%N >> reloads"] }} }}
outputs:
  - {{ template: "builtin:nginx", path: upstream.conf, frontend: fe, vars: {{ service: web }} }}
""")
    log = open(os.path.join(work, "daemon.log"), "w")
    daemon = subprocess.Popen([os.path.abspath(BIN), "run", "--config", "config.yaml", "--log", "warn"],
                              cwd=work, stderr=log)
    try:
        for _ in range(100):
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/healthz")
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(1)
        small = latency(port, work, "small")
        rss0 = rss_kb(daemon.pid)
        took = in_threads(port, lambda c, i: c.call("PUT", f"/api/v1/registry/web/r{i}", lease(i)))
        time.sleep(2)
        rss1 = rss_kb(daemon.pid)
        registered = N / took

        renew_took = 0.0
        health = []
        stop = threading.Event()

        def probe():
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            while not stop.is_set():
                t0 = time.monotonic()
                c.request("GET", "/healthz")
                c.getresponse().read()
                health.append(time.monotonic() - t0)
                time.sleep(0.05)

        prober = threading.Thread(target=probe)
        prober.start()
        for _ in range(R):
            renew_took += in_threads(port, lambda c, i: c.call("POST", f"/api/v1/registry/web/r{i}/renew"))
        stop.set()
        prober.join()
        renewals = N * R / renew_took
        large = latency(port, work, "large")

        print(f"| registrations | threads | registrations/s | RSS before | RSS after | bytes per registration |")
        print("|---:|---:|---:|---:|---:|---:|")
        print(f"| {N} | {T} | {registered:,.0f} | {rss0 / 1024:.1f} MiB | {rss1 / 1024:.1f} MiB | {(rss1 - rss0) * 1024 / N:,.0f} |")
        print()
        print("| renewals | threads | renewals/s | /healthz median | /healthz max |")
        print("|---:|---:|---:|---:|---:|")
        health.sort()
        print(f"| {N * R} | {T} | {renewals:,.0f} | {health[len(health) // 2] * 1000:.1f} ms | {health[-1] * 1000:.1f} ms |")
        print()
        print("| backends in the service | rounds | settle_min | PUT to reload, median | worst | median over settle_min |")
        print("|---:|---:|---:|---:|---:|---:|")
        for size, lat in ((1, small), (N + 1, large)):
            median, worst = lat[len(lat) // 2], lat[-1]
            print(f"| {size:,} | {ROUNDS} | {SETTLE_MIN * 1000:.0f} ms | {median * 1000:.0f} ms | {worst * 1000:.0f} ms | {(median - SETTLE_MIN) * 1000:.0f} ms |")
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
