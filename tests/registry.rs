//! Push registration end to end: a daemon with a `registry` service, real HTTP and WebSocket
//! clients on loopback, and the rendered upstream file as the proof. Every daemon is killed when
//! its test ends, pass or fail.

mod support;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::server::assert_schema;
use support::{Group, Test, free_port};

const TOKEN: &str = "s3cret-token";
const RUN: [&str; 5] = ["run", "--config", "config.yaml", "--log", "debug"];

/// A daemon whose service `web` has a static backend (so the guard's `min_backends: 1` always
/// holds) and a `registry` locator with `registry` as its settings.
fn start(registry: &str) -> (Test, Group, u16) {
    start_with(registry, "")
}

/// [`start`] with more top-level keys.
fn start_with(registry: &str, top: &str) -> (Test, Group, u16) {
    let port = free_port();
    let t = Test::new();
    t.write("token", &format!("{TOKEN}\n"));
    t.write("scoped", "scoped-token\n");
    t.write(
        "config.yaml",
        &format!(
            r#"environment: testing
{top}
daemon: {{ settle_min: 200ms, settle_max: 1s, jitter: 0 }}
server: {{ listen: ["127.0.0.1:{port}"], token_file: token }}
services:
  web:
    refresh: 1h
    port: 8080
    locators:
      - static: ["127.0.0.1"]
      - registry: {registry}
  other:
    refresh: 1h
    port: 8080
    locators: [static: ["127.0.0.1"]]
frontends:
  fe:
    reload: {{ command: [sh, -c, "echo reload >> reloads"] }}
outputs:
  - {{ template: "builtin:nginx", path: upstream.conf, frontend: fe, vars: {{ service: web }} }}
"#
        ),
    );
    t.write("reloads", "");
    let daemon = launch(&t);
    (t, daemon, port)
}

fn launch(t: &Test) -> Group {
    let daemon = t.elasticd(RUN).daemon();
    daemon.wait_for("the first apply", Duration::from_secs(15), || {
        t.exists("upstream.conf") && t.read("upstream.conf").contains("127.0.0.1:8080")
    });
    daemon
}

/// The status code and body of one request (ureq; any status is an answer, not an error).
fn request(port: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"))
        .header("Content-Type", "application/json");
    if let Some(t) = token {
        request = request.header("Authorization", format!("Bearer {t}"));
    }
    let agent = support::server::agent();
    let sent = if body.is_empty() {
        agent.run(request.body(()).unwrap())
    } else {
        agent.run(request.body(body).unwrap())
    };
    let mut response = sent.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let code = response.status().as_u16();
    let body = response.body_mut().read_to_string().unwrap();
    (code, body)
}

fn put(port: u16, id: &str, body: &str) -> (u16, String) {
    request(
        port,
        "PUT",
        &format!("/api/v1/registry/web/{id}"),
        Some(TOKEN),
        body,
    )
}

fn lease(address: &str, ttl: &str) -> String {
    format!(r#"{{"address": "{address}", "port": 9001, "ttl": "{ttl}", "environment": "testing"}}"#)
}

fn upstream_has(t: &Test, endpoint: &str) -> bool {
    t.read("upstream.conf").contains(endpoint)
}

#[test]
fn a_lease_appears_is_kept_by_renewals_and_lapses_without_them() {
    let (t, daemon, port) = start("{ ttl_min: 1s }");
    let (code, body) = put(port, "a", &lease("127.0.0.2", "3s"));
    assert_eq!(code, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_schema("Lease", &view);
    assert_eq!(view["ttl_seconds"], 3.0);
    assert_eq!(view["mode"], "lease");
    let registered = Instant::now();
    daemon.wait_for("the registration to land", Duration::from_secs(5), || {
        upstream_has(&t, "127.0.0.2:9001")
    });
    // No refresh is scheduled for an hour: the registration itself started the pass.
    assert!(registered.elapsed() < Duration::from_secs(3));

    // Renewed every second (POST renew and PUT alternately) for 6 s: still there.
    for i in 0..6 {
        std::thread::sleep(Duration::from_secs(1));
        let (code, body) = if i % 2 == 0 {
            request(
                port,
                "POST",
                "/api/v1/registry/web/a/renew",
                Some(TOKEN),
                "",
            )
        } else {
            put(port, "a", &lease("127.0.0.2", "3s"))
        };
        assert_eq!(code, 200, "{body}");
        assert_schema("Lease", &serde_json::from_str(&body).unwrap());
        assert!(upstream_has(&t, "127.0.0.2:9001"), "lapsed while renewed");
    }
    let (code, body) = request(port, "GET", "/api/v1/registry/web", Some(TOKEN), "");
    assert_eq!(code, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_schema("Leases", &list);
    assert_eq!(list[0]["id"], "a");

    // Not renewed: gone within TTL + 1 s, plus the settle window.
    let stopped = Instant::now();
    daemon.wait_for("the lapse", Duration::from_secs(10), || {
        !upstream_has(&t, "127.0.0.2:9001")
    });
    let took = stopped.elapsed();
    assert!(
        took < Duration::from_millis(3000 + 1000 + 1000),
        "lapsed after {took:?}"
    );
    assert!(upstream_has(&t, "127.0.0.1:8080"));
    // A renewal of a lapsed lease says to register again.
    let (code, body) = request(
        port,
        "POST",
        "/api/v1/registry/web/a/renew",
        Some(TOKEN),
        "",
    );
    assert_eq!(code, 404);
    assert_schema("Error", &serde_json::from_str(&body).unwrap());
    let metrics = request(port, "GET", "/metrics", None, "").1;
    assert!(
        metrics.contains("elasticd_registrations{service=\"web\"} 0"),
        "{metrics}"
    );
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn delete_removes_at_once_and_a_drain_keeps_the_backend_down_meanwhile() {
    let (t, daemon, port) = start("{}");
    assert_eq!(put(port, "a", &lease("127.0.0.2", "1m")).0, 200);
    assert_eq!(put(port, "b", &lease("127.0.0.3", "1m")).0, 200);
    daemon.wait_for("both to land", Duration::from_secs(5), || {
        upstream_has(&t, "127.0.0.2:9001") && upstream_has(&t, "127.0.0.3:9001")
    });
    let (code, body) = request(port, "DELETE", "/api/v1/registry/web/a", Some(TOKEN), "");
    assert_eq!(code, 200, "{body}");
    assert_schema("Deregistered", &serde_json::from_str(&body).unwrap());
    daemon.wait_for("the removal", Duration::from_secs(3), || {
        !upstream_has(&t, "127.0.0.2:9001")
    });

    let (code, body) = request(
        port,
        "DELETE",
        "/api/v1/registry/web/b?drain=3s",
        Some(TOKEN),
        "",
    );
    assert_eq!(code, 200, "{body}");
    let drained: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_schema("Deregistered", &drained);
    assert_eq!(drained["drain_seconds"], 3.0);
    daemon.wait_for("the drain", Duration::from_secs(3), || {
        upstream_has(&t, "127.0.0.3:9001 down")
    });
    daemon.wait_for("the end of the drain", Duration::from_secs(6), || {
        !upstream_has(&t, "127.0.0.3:9001")
    });
    let (code, _) = request(port, "DELETE", "/api/v1/registry/web/b", Some(TOKEN), "");
    assert_eq!(code, 404);
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn refusals_are_clear_json_errors_and_store_nothing() {
    let (t, daemon, port) = start("{ max_registrations: 2, tokens: [scoped] }");
    let cases: [(&str, Option<&str>, String, u16, &str); 9] = [
        (
            "a",
            None,
            lease("127.0.0.2", "10s"),
            401,
            "Authorization: Bearer",
        ),
        (
            "a",
            Some("wrong"),
            lease("127.0.0.2", "10s"),
            401,
            "not the one",
        ),
        (
            "a",
            Some(TOKEN),
            lease("127.0.0.2", "10s").replace("testing", "production"),
            409,
            "environment `production` does not match this daemon's environment `testing`",
        ),
        (
            "a",
            Some(TOKEN),
            lease("8.8.8.8", "10s"),
            403,
            "outside the ranges",
        ),
        (
            "a",
            Some(TOKEN),
            lease("not an ip", "10s"),
            400,
            "`address`",
        ),
        (
            "a",
            Some(TOKEN),
            lease("127.0.0.2", "1s"),
            400,
            "`ttl`: 1s is outside 3s..1h",
        ),
        (
            "a",
            Some(TOKEN),
            r#"{"address": "127.0.0.2", "port": 0, "environment": "testing"}"#.into(),
            400,
            "`port`",
        ),
        ("a", Some(TOKEN), "{not json".into(), 400, ""),
        (
            "bad id!",
            Some(TOKEN),
            lease("127.0.0.2", "10s"),
            400,
            "`id`",
        ),
    ];
    for (id, token, body, want, says) in cases {
        let id = id.replace(' ', "%20");
        let (code, answer) = request(
            port,
            "PUT",
            &format!("/api/v1/registry/web/{id}"),
            token,
            &body,
        );
        assert_eq!(code, want, "{body} -> {answer}");
        let json: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_schema("Error", &json);
        assert!(json["error"].as_str().unwrap().contains(says), "{answer}");
    }
    assert!(
        daemon
            .log()
            .contains("registration refused: environment `production`")
    );
    // A body over `max_body_bytes` (64 KiB by default) is refused before it is parsed.
    let huge = format!(
        r#"{{"address": "127.0.0.2", "port": 1, "meta": {{"k": "{}"}}}}"#,
        "x".repeat(70_000)
    );
    let (code, body) = put(port, "a", &huge);
    assert_eq!(code, 413, "{body}");
    assert_schema("Error", &serde_json::from_str(&body).unwrap());
    let (code, body) = request(
        port,
        "PUT",
        "/api/v1/registry/other/a",
        Some(TOKEN),
        &lease("127.0.0.2", "10s"),
    );
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("takes no registrations"), "{body}");
    let (code, body) = request(
        port,
        "PUT",
        "/api/v1/registry/nope/a",
        Some(TOKEN),
        &lease("127.0.0.2", "10s"),
    );
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("no service named"), "{body}");
    let (_, list) = request(port, "GET", "/api/v1/registry/web", Some(TOKEN), "");
    assert_eq!(list, "[]");

    // The scoped token registers into this service; the limit refuses the third.
    let scoped = Some("scoped-token");
    for (id, ip) in [("a", "127.0.0.2"), ("b", "127.0.0.3")] {
        let (code, body) = request(
            port,
            "PUT",
            &format!("/api/v1/registry/web/{id}"),
            scoped,
            &lease(ip, "1m"),
        );
        assert_eq!(code, 200, "{body}");
    }
    let (code, body) = put(port, "c", &lease("127.0.0.4", "1m"));
    assert_eq!(code, 507, "{body}");
    assert_schema("Error", &serde_json::from_str(&body).unwrap());
    assert!(body.contains("maximum of 2 registrations"), "{body}");
    // The scoped token is no token for the rest of the API.
    let (code, _) = request(port, "POST", "/api/v1/refresh", scoped, "");
    assert_eq!(code, 401);
    daemon.wait_for("the two", Duration::from_secs(5), || {
        upstream_has(&t, "127.0.0.3:9001") && !upstream_has(&t, "127.0.0.4")
    });
    assert_eq!(daemon.stop(), Some(0));
}

fn ws_connect(port: u16, id: &str, address: &str) -> tungstenite::WebSocket<TcpStream> {
    use tungstenite::client::IntoClientRequest;
    let url = format!(
        "ws://127.0.0.1:{port}/api/v1/registry/web/{id}/connect?address={address}&port=9001&environment=testing&meta.rack=r7"
    );
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (mut socket, response) = tungstenite::client(request, stream).unwrap();
    assert_eq!(response.status(), 101);
    let hello: serde_json::Value =
        serde_json::from_str(&socket.read().unwrap().to_string()).unwrap();
    assert_schema("Lease", &hello);
    assert_eq!(hello["mode"], "connection", "{hello}");
    socket
}

#[test]
fn a_connection_bound_registration_lives_exactly_as_long_as_its_connection() {
    let (t, daemon, port) = start("{}");
    // Closed by the client: gone within 2 s.
    let mut closed = ws_connect(port, "c1", "127.0.0.5");
    daemon.wait_for("c1 to land", Duration::from_secs(5), || {
        upstream_has(&t, "127.0.0.5:9001")
    });
    // It outlives a lease's TTL while the client answers pings.
    let until = Instant::now() + Duration::from_secs(4);
    closed
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while Instant::now() < until {
        let _ = closed.read();
    }
    assert!(upstream_has(&t, "127.0.0.5:9001"));
    closed.close(None).unwrap();
    let _ = closed.flush();
    let at = Instant::now();
    daemon.wait_for("c1 to go", Duration::from_secs(3), || {
        !upstream_has(&t, "127.0.0.5:9001")
    });
    assert!(at.elapsed() < Duration::from_secs(2));

    // The socket dropped without a close frame, as when the client is killed.
    let killed = ws_connect(port, "c2", "127.0.0.6");
    daemon.wait_for("c2 to land", Duration::from_secs(5), || {
        upstream_has(&t, "127.0.0.6:9001")
    });
    drop(killed);
    let at = Instant::now();
    daemon.wait_for("c2 to go", Duration::from_secs(3), || {
        !upstream_has(&t, "127.0.0.6:9001")
    });
    assert!(at.elapsed() < Duration::from_secs(2));

    // A client that stops answering pings (a frozen host, a cut network) is dropped too.
    let silent = ws_connect(port, "c3", "127.0.0.7");
    daemon.wait_for("c3 to land", Duration::from_secs(5), || {
        upstream_has(&t, "127.0.0.7:9001")
    });
    daemon.wait_for("c3 to go", Duration::from_secs(6), || {
        !upstream_has(&t, "127.0.0.7:9001")
    });
    drop(silent);
    assert!(
        daemon.log().contains("two pings unanswered"),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.stop(), Some(0));
}

/// A WebSocket client in its own process: the handshake by hand, then it answers every ping
/// until it is killed.
const PY_CLIENT: &str = r#"
import socket, struct, sys
port, token = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port))
s.sendall((
    "GET /api/v1/registry/web/k/connect?address=127.0.0.8&port=9001&environment=testing HTTP/1.1\r\n"
    "Host: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    "Authorization: Bearer " + token + "\r\n\r\n").encode())
f = s.makefile("rb")
status = f.readline()
assert status.startswith(b"HTTP/1.1 101"), status
while f.readline() not in (b"\r\n", b""):
    pass
print("connected", flush=True)
while True:
    head = f.read(2)
    op, n = head[0] & 0x0F, head[1] & 0x7F
    if n == 126:
        n = struct.unpack(">H", f.read(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", f.read(8))[0]
    payload = f.read(n)
    if op == 9:
        # A pong, masked with the all-zero key (the payload goes as it is).
        s.sendall(bytes([0x8A, 0x80 | len(payload)]) + bytes(4) + payload)
"#;

#[test]
fn a_killed_client_process_loses_its_registration_within_2_s() {
    let (t, daemon, port) = start("{}");
    t.write("client.py", PY_CLIENT);
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(t.join("client.py"))
        .arg(port.to_string())
        .arg(TOKEN);
    let client = Group::spawn("python client", cmd, &t.join("client.log"));
    daemon.wait_for("the client to land", Duration::from_secs(10), || {
        upstream_has(&t, "127.0.0.8:9001")
    });
    // Longer than two ping periods: answered pings keep it.
    std::thread::sleep(Duration::from_secs(4));
    assert!(upstream_has(&t, "127.0.0.8:9001"), "{}", client.log());
    client.signal(nix::sys::signal::Signal::SIGKILL);
    let at = Instant::now();
    daemon.wait_for("the registration to go", Duration::from_secs(4), || {
        !upstream_has(&t, "127.0.0.8:9001")
    });
    assert!(at.elapsed() < Duration::from_secs(2), "{:?}", at.elapsed());
    assert!(
        !daemon.log().contains("two pings unanswered"),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn a_restart_keeps_every_registration_with_a_state_file() {
    let (t, daemon, port) = start_with("{}", "state_file: state.json");
    assert_eq!(put(port, "a", &lease("127.0.0.2", "30s")).0, 200);
    let socket = ws_connect(port, "c", "127.0.0.3");
    daemon.wait_for("both to land", Duration::from_secs(5), || {
        upstream_has(&t, "127.0.0.2:9001") && upstream_has(&t, "127.0.0.3:9001")
    });
    assert_eq!(daemon.stop(), Some(0));
    drop(socket);
    let saved = t.json("state.json.registrations");
    assert_eq!(
        saved["registrations"].as_array().unwrap().len(),
        2,
        "{saved}"
    );

    // The new daemon has both at once; the lease renews as if nothing happened, and the
    // connection's client reconnects into its registration.
    std::fs::remove_file(t.join("upstream.conf")).unwrap();
    let daemon = launch(&t);
    assert!(upstream_has(&t, "127.0.0.2:9001") && upstream_has(&t, "127.0.0.3:9001"));
    assert!(
        daemon.log().contains("restored 2 registrations"),
        "{}",
        daemon.log()
    );
    let (code, body) = request(
        port,
        "POST",
        "/api/v1/registry/web/a/renew",
        Some(TOKEN),
        "",
    );
    assert_eq!(code, 200, "{body}");
    let socket = ws_connect(port, "c", "127.0.0.3");
    let (_, list) = request(port, "GET", "/api/v1/registry/web", Some(TOKEN), "");
    assert!(list.contains("\"mode\":\"connection\""), "{list}");
    drop(socket);
    assert_eq!(daemon.stop(), Some(0));
}

/// `elasticd register` against the daemon at `port`, its log in `NAME.log`.
fn register_client(t: &Test, name: &str, port: u16, args: &[&str]) -> Group {
    let server = format!("http://127.0.0.1:{port}");
    let mut all = vec![
        "register",
        "--server",
        &server,
        "--service",
        "web",
        "--token-file",
        "token",
    ];
    all.extend_from_slice(args);
    let cmd = t.elasticd(all).command();
    Group::spawn(name, cmd, &t.join(format!("{name}.log")))
}

#[test]
fn elasticd_register_keeps_a_lease_and_drains_on_sigterm() {
    let (t, daemon, port) = start("{ ttl_min: 1s }");
    let mut client = register_client(
        &t,
        "lease",
        port,
        &[
            "--address",
            "127.0.0.2",
            "--port",
            "9001",
            "--ttl",
            "2s",
            "--environment",
            "testing",
            "--drain",
            "1s",
            "--meta",
            "rack=r7",
        ],
    );
    daemon.wait_for("the registration", Duration::from_secs(5), || {
        upstream_has(&t, "127.0.0.2:9001")
    });
    // Three TTLs: the client's renewals keep it.
    std::thread::sleep(Duration::from_secs(6));
    assert!(upstream_has(&t, "127.0.0.2:9001"), "{}", client.log());
    let (_, list) = request(port, "GET", "/api/v1/registry/web", Some(TOKEN), "");
    assert!(
        list.contains("\"id\":\"127.0.0.2:9001\"") && list.contains("r7"),
        "{list}"
    );

    client.signal(nix::sys::signal::Signal::SIGTERM);
    daemon.wait_for("the drain", Duration::from_secs(3), || {
        upstream_has(&t, "127.0.0.2:9001 down")
    });
    assert_eq!(
        client.wait_exit("the client to exit", Duration::from_secs(5)),
        0
    );
    daemon.wait_for("the removal", Duration::from_secs(3), || {
        !upstream_has(&t, "127.0.0.2:9001")
    });
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn elasticd_register_exits_1_on_a_refused_environment_or_token() {
    let (t, daemon, port) = start("{}");
    let mut wrong_env = register_client(
        &t,
        "env",
        port,
        &[
            "--address",
            "127.0.0.2",
            "--port",
            "9001",
            "--ttl",
            "10s",
            "--environment",
            "production",
        ],
    );
    assert_eq!(wrong_env.wait_exit("a refusal", Duration::from_secs(5)), 1);
    assert!(
        wrong_env.log().contains("error: the server refused the registration (409): environment `production` does not match"),
        "{}",
        wrong_env.log()
    );
    t.write("bad-token", "nope\n");
    let server = format!("http://127.0.0.1:{port}");
    let out = t
        .elasticd([
            "register",
            "--server",
            &server,
            "--service",
            "web",
            "--token-file",
            "bad-token",
            "--address",
            "127.0.0.2",
            "--port",
            "9001",
            "--connect",
            "--environment",
            "testing",
        ])
        .run_within(Duration::from_secs(10));
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("(401)"), "{out}");
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn kill_9_of_a_connected_elasticd_register_removes_it_within_2_s() {
    let (t, daemon, port) = start("{}");
    let client = register_client(
        &t,
        "connect",
        port,
        &[
            "--address",
            "127.0.0.9",
            "--port",
            "9001",
            "--connect",
            "--environment",
            "testing",
        ],
    );
    daemon.wait_for("the registration", Duration::from_secs(5), || {
        upstream_has(&t, "127.0.0.9:9001")
    });
    std::thread::sleep(Duration::from_secs(4));
    assert!(upstream_has(&t, "127.0.0.9:9001"), "{}", client.log());
    client.signal(nix::sys::signal::Signal::SIGKILL);
    let at = Instant::now();
    daemon.wait_for("the removal", Duration::from_secs(4), || {
        !upstream_has(&t, "127.0.0.9:9001")
    });
    assert!(at.elapsed() < Duration::from_secs(2), "{:?}", at.elapsed());
    assert_eq!(daemon.stop(), Some(0));
}

/// The issue's end-to-end case: a real nginx under continuous load; a backend that registers
/// itself with `elasticd register` is served, and its graceful deregistration with a drain loses
/// no request.
#[test]
fn nginx_serves_a_registered_backend_and_its_drained_exit_fails_no_request() {
    use support::live::{Frontend, Kind, Load, Pool};
    const CONVERGE: Duration = Duration::from_secs(30);
    const WINDOW: Duration = Duration::from_millis(600);
    let pool = Pool::start(3);
    let mut fe = Frontend::new(Kind::Nginx);
    fe.start(&pool.document_in_zone(&[0, 1], Some("start")));
    fe.write("backends.json", &pool.document(&[0, 1]));
    fe.write("token", &format!("{TOKEN}\n"));
    let port = free_port();
    let config = fe.read("config.yaml").replace(
        "locators: [file: { path: backends.json }]",
        "locators: [file: { path: backends.json }, registry: { ttl_min: 1s }]",
    );
    assert!(config.contains("registry:"), "{config}");
    fe.write(
        "config.yaml",
        &format!(
            "environment: testing\nserver: {{ listen: [\"127.0.0.1:{port}\"], token_file: token }}\n{config}"
        ),
    );
    fe.start_daemon();
    let load = Load::start(fe.port, 2, Duration::from_millis(2));
    load.wait_exact(&pool.ids(&[0, 1]), WINDOW, CONVERGE, || fe.logs());

    let addr = pool.backends[2].addr;
    let server = format!("http://127.0.0.1:{port}");
    let (ip, backend_port) = (addr.ip().to_string(), addr.port().to_string());
    let cmd = support::Cmd::new(&fe.path(""))
        .args([
            "register",
            "--server",
            &server,
            "--service",
            "web",
            "--token-file",
            "token",
            "--address",
            &ip,
            "--port",
            &backend_port,
            "--ttl",
            "2s",
            "--drain",
            "2s",
            "--environment",
            "testing",
        ])
        .command();
    let mut client = Group::spawn("elasticd register", cmd, &fe.path("register.log"));
    load.wait_exact(&pool.ids(&[0, 1, 2]), WINDOW, CONVERGE, || {
        format!("{}\n{}", client.log(), fe.logs())
    });
    client.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        client.wait_exit("the client's drain", Duration::from_secs(10)),
        0
    );
    load.wait_exact(&pool.ids(&[0, 1]), WINDOW, CONVERGE, || fe.logs());
    fe.assert_running();
    let totals = load.stop();
    assert_eq!(
        totals.failed(),
        0,
        "{} of {} requests failed: {:#?}\n{}",
        totals.failed(),
        totals.requests,
        totals.examples,
        fe.logs()
    );
    assert!(totals.requests > 0);
    assert_eq!(fe.stop_daemon(), Some(0));
}

#[test]
fn a_thousand_clients_registering_and_renewing_at_once_all_land() {
    let (t, daemon, port) = start("{}");
    let ip = |i: usize| format!("127.0.{}.{}", 10 + i / 250, i % 250 + 1);
    let threads: Vec<_> = (0..20)
        .map(|k| {
            std::thread::spawn(move || {
                for i in (k..1000).step_by(20) {
                    let (code, body) = put(port, &format!("c{i}"), &lease(&ip(i), "1m"));
                    assert_eq!(code, 200, "{body}");
                }
                for _ in 0..2 {
                    for i in (k..1000).step_by(20) {
                        let path = format!("/api/v1/registry/web/c{i}/renew");
                        let (code, body) = request(port, "POST", &path, Some(TOKEN), "");
                        assert_eq!(code, 200, "{body}");
                    }
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    daemon.wait_for("all 1000 in the upstream", Duration::from_secs(20), || {
        t.read("upstream.conf").matches(":9001 ").count() == 1000
    });
    // Still converging: one more change lands as quickly as ever.
    let (code, _) = request(port, "DELETE", "/api/v1/registry/web/c0", Some(TOKEN), "");
    assert_eq!(code, 200);
    daemon.wait_for("the removal", Duration::from_secs(5), || {
        !upstream_has(&t, &format!("{}:9001 ", ip(0)))
    });
    let metrics = request(port, "GET", "/metrics", None, "").1;
    assert!(
        metrics.contains("elasticd_registrations{service=\"web\"} 999"),
        "{metrics}"
    );
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn elasticd_register_is_registered_only_while_its_local_check_passes() {
    let (t, daemon, port) = start("{}");
    let check_port = free_port();
    let listener = std::net::TcpListener::bind(("127.0.0.1", check_port)).unwrap();
    let check = format!("127.0.0.1:{check_port}");
    let mut client = register_client(
        &t,
        "checked",
        port,
        &[
            "--address",
            "127.0.0.2",
            "--port",
            "9001",
            "--ttl",
            "30s",
            "--environment",
            "testing",
            "--check-tcp",
            &check,
        ],
    );
    daemon.wait_for("the registration", Duration::from_secs(5), || {
        upstream_has(&t, "127.0.0.2:9001")
    });
    // The backend goes down: deregistered within a check period, long before the TTL.
    drop(listener);
    daemon.wait_for("the removal", Duration::from_secs(5), || {
        !upstream_has(&t, "127.0.0.2:9001")
    });
    let _listener = std::net::TcpListener::bind(("127.0.0.1", check_port)).unwrap();
    daemon.wait_for("the registration again", Duration::from_secs(5), || {
        upstream_has(&t, "127.0.0.2:9001")
    });
    assert!(
        client.log().contains("the local check failed"),
        "{}",
        client.log()
    );
    client.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        client.wait_exit("the client to exit", Duration::from_secs(5)),
        0
    );
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn check_warns_when_nothing_can_register_or_a_restart_would_lose_registrations() {
    let t = Test::new().config(
        "services:\n  web:\n    port: 8080\n    locators: [registry: {}]\n\
         outputs:\n  - { template: \"builtin:nginx\", path: upstream.conf, vars: { service: web } }\n",
    );
    let out = t.elasticd(["check", "--config", "config.yaml"]).run();
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains(
            "config.yaml:4:16: service `web`: nothing can register into the `registry` locator"
        ),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("registrations are lost when the daemon restarts: set `state_file`"),
        "{out}"
    );
}
