#!/usr/bin/env python3
"""In-place updates (`haproxy_runtime`) against reloads (`master_socket`) on a real HAProxy.

For each mode, a master-worker HAProxy (`haproxy -W -S`) runs on loopback in front of 8 HTTP
backends on 127.0.0.11-18, and `elasticd render` is run $ROUNDS times, each time after
replacing two of the four backends in the `file` locator's document. Measured per round: the
wall time of `elasticd render` (locate, render, `haproxy -c` on the staged file, install, then
the Runtime API commands or the reload), and the time from the start of the render until
requests through HAProxy reach exactly the new set. $KEEPALIVE idle keep-alive client connections
are opened before the rounds, as real clients hold them; at the end each sends one more request,
and those still answered are counted (a reload makes the old worker close idle connections, so
clients must reconnect). The HAProxy processes left (master, workers) and their RSS are counted
too.

Prints markdown tables. Everything runs in a temp dir; every process started is stopped by PID.

Usage: benches/haproxy_runtime.py    Env: ROUNDS (default 20), KEEPALIVE (default 20),
       BIN (elasticd binary; default: cargo build --release --no-default-features)
"""

import http.server
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROUNDS = int(os.environ.get("ROUNDS", "20"))
KEEPALIVE = int(os.environ.get("KEEPALIVE", "20"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def binary():
    if os.environ.get("BIN"):
        return os.environ["BIN"]
    print("== cargo build --release --no-default-features", file=sys.stderr)
    subprocess.run(
        ["cargo", "build", "--release", "--no-default-features", "--quiet"], cwd=ROOT, check=True
    )
    meta = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    return os.path.join(json.loads(meta.stdout)["target_directory"], "release", "elasticd")


def haproxy_path():
    for d in os.environ.get("PATH", "").split(":") + ["/usr/sbin", "/sbin"]:
        p = os.path.join(d, "haproxy")
        if os.access(p, os.X_OK):
            return p
    sys.exit("haproxy is not installed (Debian package haproxy)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_backend(host):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            body = self.server.identity.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            pass  # health checks connect and close without a request

    server = Server((host, 0), Handler)
    server.identity = "%s:%d" % server.server_address
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.identity


def get(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return body.decode() if head.startswith(b"HTTP/1.1 200") else head.split(b"\r\n")[0].decode()
    except OSError as e:
        return str(e)


def wait_for(port, expected):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seen = {get(port) for _ in range(len(expected) * 4 + 4)}
        if seen == expected:
            return
        time.sleep(0.005)
    sys.exit("requests reached %s, expected %s" % (seen, expected))


def haproxy_pids(master):
    """The master and every worker (current and old) under it."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True, text=True)
    return [master] + [int(p) for p in out.stdout.split()]


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run_mode(mode, elasticd, haproxy, backends):
    work = tempfile.mkdtemp(prefix="elasticd-bench-")
    port = free_port()
    master = None
    clients = []
    try:
        with open(os.path.join(work, "main.cfg"), "w") as f:
            f.write(
                "global\n    stats socket %s/admin.sock level admin\n"
                "defaults\n    mode http\n    timeout connect 1s\n    timeout client 60s\n"
                "    timeout server 60s\n    timeout http-keep-alive 60s\n"
                "frontend fe\n    bind 127.0.0.1:%d\n    default_backend web\n" % (work, port)
            )
        if mode == "haproxy_runtime":
            reload = "{ haproxy_runtime: { socket: admin.sock, fallback: { master_socket: master.sock } } }"
        else:
            reload = "{ master_socket: master.sock }"
        with open(os.path.join(work, "config.yaml"), "w") as f:
            f.write(
                "services:\n  web:\n    locators: [file: { path: backends.json }]\n"
                "frontends:\n  haproxy:\n    check: [%s, -c, -q, -f, main.cfg, -f, \"{staged}\"]\n"
                "    reload: %s\n"
                "outputs:\n  - { template: \"builtin:haproxy\", path: web.cfg, frontend: haproxy,"
                " vars: { service: web, slots: 8 } }\n" % (haproxy, reload)
            )

        def set_backends(endpoints):
            docs = [{"address": e.rsplit(":", 1)[0], "port": int(e.rsplit(":", 1)[1])} for e in endpoints]
            with open(os.path.join(work, "backends.json"), "w") as f:
                json.dump(docs, f)

        def render(*extra):
            r = subprocess.run([elasticd, "render", "--config", "config.yaml", *extra], cwd=work,
                               capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"})
            if r.returncode != 0:
                sys.exit("elasticd render failed:\n" + r.stderr)
            return r.stderr

        current = backends[:4]
        set_backends(current)
        render("--no-reload")
        master = subprocess.Popen(
            [haproxy, "-W", "-S", os.path.join(work, "master.sock"), "-f", "main.cfg", "-f", "web.cfg"],
            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        wait_for(port, set(current))
        # Idle keep-alive clients: each has had one request answered and keeps its connection.
        for _ in range(KEEPALIVE):
            c = socket.create_connection(("127.0.0.1", port))
            c.sendall(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n")
            c.recv(4096)
            clients.append(c)

        render_ms, converge_ms = [], []
        for i in range(ROUNDS):
            # Replace two of the four: the two oldest leave, two others arrive.
            spare = [b for b in backends if b not in current]
            current = current[2:] + spare[i % 2 * 2: i % 2 * 2 + 2][:2]
            set_backends(current)
            start = time.monotonic()
            render()
            render_ms.append((time.monotonic() - start) * 1000)
            wait_for(port, set(current))
            converge_ms.append((time.monotonic() - start) * 1000)
        alive = 0
        for c in clients:
            try:
                c.settimeout(2)
                c.sendall(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n")
                alive += c.recv(4096).startswith(b"HTTP/1.1 200")
            except OSError:
                pass
        time.sleep(0.5)
        pids = haproxy_pids(master.pid)
        total_rss = sum(rss_kb(p) for p in pids)
        return {
            "render": render_ms,
            "converge": converge_ms,
            "alive": alive,
            "processes": len(pids),
            "rss_mb": total_rss / 1024,
        }
    finally:
        for c in clients:
            c.close()
        if master is not None:
            os.killpg(master.pid, signal.SIGTERM)
            try:
                master.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(master.pid, signal.SIGKILL)
                master.wait()
        shutil.rmtree(work, ignore_errors=True)


def main():
    elasticd = binary()
    haproxy = haproxy_path()
    backends = [start_backend("127.0.0.%d" % h) for h in range(11, 19)]
    version = subprocess.run([haproxy, "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    print("%s; %d rounds, %d idle keep-alive clients; elasticd %s\n" % (version, ROUNDS, KEEPALIVE, elasticd))
    print("| reload | render, median | render, worst | change to traffic, median | change to traffic, worst"
          " | keep-alive connections kept | HAProxy processes after | their RSS |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for mode in ["haproxy_runtime", "master_socket"]:
        r = run_mode(mode, elasticd, haproxy, backends)
        print("| `%s` | %.0f ms | %.0f ms | %.0f ms | %.0f ms | %d of %d | %d | %.1f MB |" % (
            mode, statistics.median(r["render"]), max(r["render"]),
            statistics.median(r["converge"]), max(r["converge"]), r["alive"], KEEPALIVE,
            r["processes"], r["rss_mb"]))


if __name__ == "__main__":
    main()
