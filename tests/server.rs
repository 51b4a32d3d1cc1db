//! End-to-end tests of the operations server (`server:`) against a real `elasticd run`, through
//! real HTTP clients on loopback: ureq over TCP and hyper's client over the Unix socket. Every
//! answer that has a schema in `docs/openapi.yaml` is validated against it, so that the document
//! cannot drift from the code. TLS is in `tests/server_tls.rs`. Every daemon is killed when its
//! test ends.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use support::server::{
    RUN, TOKEN, agent, assert_schema, config, json_of, schema_errors, start, unix_request,
};
use support::{Test, targets_json};

/// The body with the test's dir replaced, for snapshots.
fn portable(t: &Test, value: &Value) -> Value {
    let text = value.to_string().replace(t.path_str(), "[dir]");
    serde_json::from_str(&text).expect("JSON again")
}

macro_rules! snapshot {
    ($name:expr, $value:expr) => {
        insta::assert_json_snapshot!($name, $value, {
            ".**.at" => "[time]",
            ".**.started_at" => "[time]",
            ".**.loaded_at" => "[time]",
            ".**.changed_at" => "[time]",
            ".**.last_success_at" => "[time]",
            ".**.next_refresh_at" => "[time]",
            ".**.written_at" => "[time]",
            ".**.last_duration_seconds" => "[seconds]",
            ".**.sha256" => "[sha256]",
            ".**.version" => "[version]",
        })
    };
}

#[test]
fn every_endpoint_has_its_documented_shape() {
    let d = start("1s", "  token_file: token", |t| {
        t.write("token", &format!("{TOKEN}\n"));
        fs::set_permissions(t.join("token"), fs::Permissions::from_mode(0o600)).unwrap();
        t.write("backends.json", &targets_json(&["127.0.0.1", "127.0.0.2"]));
    });
    d.wait("the daemon to be ready", || d.ready());
    d.wait("the change to be logged", || {
        d.json("/api/v1/changes")
            .1
            .as_array()
            .is_some_and(|c| !c.is_empty())
    });

    for (path, schema) in [
        ("/readyz", "Readiness"),
        ("/api/v1/status", "StatusWithReadiness"),
        ("/api/v1/services/web", "Service"),
    ] {
        let (code, body) = d.json(path);
        assert_eq!(code, 200, "{path}: {body}");
        assert_schema(schema, &body);
        snapshot!(
            path.trim_start_matches('/').replace('/', "_"),
            portable(&d.t, &body)
        );
    }
    for (path, item) in [
        ("/api/v1/services", "Service"),
        ("/api/v1/frontends", "Frontend"),
        ("/api/v1/outputs", "Output"),
        ("/api/v1/changes", "Change"),
    ] {
        let (code, body) = d.json(path);
        assert_eq!(code, 200, "{path}: {body}");
        let items = body.as_array().unwrap_or_else(|| panic!("{path}: {body}"));
        assert!(!items.is_empty(), "{path}");
        items.iter().for_each(|v| assert_schema(item, v));
        snapshot!(
            path.trim_start_matches('/').replace('/', "_"),
            portable(&d.t, &body)
        );
    }
    // The schemas are strict enough to catch a drift: an unknown field, a missing one, a
    // timestamp in another format.
    let (_, service) = d.json("/api/v1/services/web");
    for (key, value) in [
        ("bogus", Value::from(1)),
        ("last_success_at", Value::from("yesterday")),
        ("name", Value::Null),
    ] {
        let mut drifted = service.clone();
        drifted[key] = value;
        assert!(!schema_errors("Service", &drifted).is_empty(), "{key}");
    }
    let (code, body) = d.json("/api/v1/services/nope");
    assert_eq!(code, 404);
    assert_schema("Error", &body);
    assert_eq!(body["error"], "no service named `nope`");
    let (code, body) = d.json("/api/v2/anything");
    assert_eq!(code, 404);
    assert_schema("Error", &body);

    let (code, text) = d.get("/healthz").unwrap();
    assert_eq!((code, text.as_str()), (200, "ok\n"));
    let response = agent().get(&d.url("/metrics")).call().unwrap();
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    let metrics = response.into_body().read_to_string().unwrap();
    assert!(metrics.contains("elasticd_build_info"), "{metrics}");
    let response = agent().get(&d.url("/")).call().unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );

    let (code, body) = d.refresh("", Some(TOKEN));
    assert_eq!(code, 202, "{body}");
    assert_schema("Refreshing", &body);
    assert_eq!(body, serde_json::json!({"refreshing": ["web"]}));
    let (code, body) = d.refresh("", Some(TOKEN));
    assert_eq!(code, 429, "{body}");
    assert_schema("Error", &body);
}

#[test]
fn readiness_follows_the_locator_through_failure_and_recovery() {
    let d = start("1s", "", |_| {});
    // No file yet: no answer at all.
    let (code, body) = d.json("/readyz");
    assert_eq!(code, 503, "{body}");
    assert_schema("Readiness", &body);
    assert_eq!(body["problems"][0]["reason"], "no_data", "{body}");
    assert_eq!(body["problems"][0]["name"], "web");

    d.t.write("backends.json", &targets_json(&["127.0.0.1"]));
    d.wait("ready once the file is there", || d.ready());
    fs::remove_file(d.t.join("backends.json")).unwrap();
    // Still ready while the last good answer is fresh; not after 3 refresh periods.
    d.wait("not ready: stale data", || d.json("/readyz").0 == 503);
    let (_, body) = d.json("/readyz");
    assert_schema("Readiness", &body);
    let problem = &body["problems"][0];
    assert_eq!(
        (&problem["kind"], &problem["name"], &problem["reason"]),
        (&"service".into(), &"web".into(), &"stale".into()),
        "{body}"
    );
    assert!(
        problem["message"]
            .as_str()
            .unwrap()
            .contains("3 refresh periods"),
        "{body}"
    );
    let (_, service) = d.json("/api/v1/services/web");
    assert!(
        service["consecutive_failures"].as_u64().unwrap() >= 1,
        "{service}"
    );
    assert!(service["last_error"]["message"].is_string(), "{service}");
    // The last good set is still served.
    assert_eq!(service["backends"][0]["address"], "127.0.0.1");

    d.t.write("backends.json", &targets_json(&["127.0.0.1"]));
    d.wait("ready again after recovery", || d.ready());
}

#[test]
fn readiness_names_a_failing_check_and_an_owed_reload() {
    let d = start("1s", "", |t| {
        let fe = "frontends:\n  fe:\n    check: [sh, -c, \"test ! -e check-fails\"]\n    \
                  reload: { command: [sh, -c, \"test ! -e reload-fails\"] }\n";
        let text = t.read("config.yaml");
        let start = text.find("frontends:").unwrap();
        let end = text.find("outputs:").unwrap();
        t.write(
            "config.yaml",
            &format!("{}{fe}{}", &text[..start], &text[end..]),
        );
        t.write("check-fails", "");
        t.write("backends.json", &targets_json(&["127.0.0.1"]));
    });
    let problem = |reason: &str| {
        let (code, body) = d.json("/readyz");
        code == 503 && body["problems"][0]["reason"] == reason
    };
    d.wait("check_failing", || problem("check_failing"));
    let (_, body) = d.json("/readyz");
    assert_schema("Readiness", &body);
    assert_eq!(body["problems"][0]["kind"], "frontend", "{body}");
    assert_eq!(body["problems"][0]["name"], "fe", "{body}");
    let (_, frontends) = d.json("/api/v1/frontends");
    assert_eq!(frontends[0]["last_check"]["ok"], false, "{frontends}");

    d.t.write("reload-fails", "");
    fs::remove_file(d.t.join("check-fails")).unwrap();
    d.wait("reload_owed", || problem("reload_owed"));
    let (_, frontends) = d.json("/api/v1/frontends");
    assert_schema("Frontend", &frontends[0]);
    assert_eq!(frontends[0]["reload_owed"], true, "{frontends}");
    assert_eq!(frontends[0]["last_reload"]["ok"], false, "{frontends}");

    fs::remove_file(d.t.join("reload-fails")).unwrap();
    d.wait("ready once the reload succeeds", || d.ready());
}

#[test]
fn refresh_needs_the_token_and_goes_through_settle() {
    // Located once at start and then only when asked: an hour between scheduled refreshes.
    let d = start("1h", "  token_file: token", |t| {
        t.write("token", &format!("{TOKEN}\n"));
        t.write("backends.json", &targets_json(&["127.0.0.1"]));
    });
    d.wait("the first apply", || {
        d.t.read("upstream.conf").contains("127.0.0.1:8080")
    });
    d.t.write("backends.json", &targets_json(&["127.0.0.9"]));

    let (code, body) = d.refresh("", None);
    assert_eq!(code, 401, "{body}");
    assert_schema("Error", &body);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer")
    );
    let (code, body) = d.refresh("", Some("wrong-token"));
    assert_eq!(code, 401, "{body}");
    assert!(!body.to_string().contains(TOKEN), "the token leaks: {body}");
    let (code, body) = d.refresh("?service=nope", Some(TOKEN));
    assert_eq!(code, 404, "{body}");
    assert!(!d.t.read("upstream.conf").contains("127.0.0.9"));

    let (code, body) = d.refresh("?service=web", Some(TOKEN));
    assert_eq!(
        (code, &body),
        (202, &serde_json::json!({"refreshing": ["web"]}))
    );
    let (code, body) = d.refresh("?service=web", Some(TOKEN));
    assert_eq!(code, 429, "{body}");
    // The scheme is case-insensitive; the other target (all services) has its own limit.
    let response = agent()
        .post(&d.url("/api/v1/refresh"))
        .header("Authorization", &format!("bearer {TOKEN}"))
        .send_empty()
        .unwrap();
    assert_eq!(json_of(response).0, 202);
    let (code, body) = d.json("/api/v1/refresh");
    assert_eq!(code, 405, "{body}");
    assert_schema("Error", &body);
    d.wait("the refreshed set to be applied", || {
        d.t.read("upstream.conf").contains("127.0.0.9:8080")
    });
    assert!(!d.daemon.log().contains(TOKEN), "the token is logged");
}

#[test]
fn the_unix_socket_serves_with_its_mode_and_is_removed_on_stop() {
    let t = Test::new().config(
        &config(0, "1s", "  socket: { path: api.sock, mode: \"0600\" }")
            .replace("  listen: [\"127.0.0.1:0\"]\n", ""),
    );
    t.write("backends.json", &targets_json(&["127.0.0.1"]));
    let mut daemon = t.elasticd(RUN).daemon();
    let socket = t.join("api.sock");
    daemon.wait_for("the socket", Duration::from_secs(10), || socket.exists());
    let mode = fs::metadata(&socket).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
    let leftovers: Vec<_> = fs::read_dir(t.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".elasticd-socket-")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(
        daemon.log().contains("server listening on unix:"),
        "{}",
        daemon.log()
    );
    assert!(
        !daemon.log().contains("127.0.0.1:9797"),
        "a TCP listener was opened too"
    );

    assert_eq!(
        unix_request(&socket, "GET", "/healthz"),
        (200, "ok\n".into())
    );
    let (code, body) = unix_request(&socket, "GET", "/api/v1/services/web");
    assert_eq!(code, 200, "{body}");
    assert_schema("Service", &serde_json::from_str(&body).unwrap());
    // No token_file: the mutating endpoints are off.
    let (code, body) = unix_request(&socket, "POST", "/api/v1/refresh");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("server.token_file"), "{body}");

    assert_eq!(
        daemon.stop_with(Signal::SIGTERM, Duration::from_secs(10)),
        Some(0)
    );
    assert!(!socket.exists(), "the socket file is left behind");

    // A regular file at the path is not replaced: the daemon does not start.
    t.write("api.sock", "not a socket");
    let out = t.elasticd(RUN).run_within(Duration::from_secs(10));
    assert_ne!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains("api.sock") && out.stderr.contains("not a socket"),
        "{out}"
    );
    assert_eq!(t.read("api.sock"), "not a socket");
}

/// Reads until the peer closes; `None` when it is still open after `limit`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    match stream.read_to_end(&mut got) {
        Ok(_) => Some(String::from_utf8_lossy(&got).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            Some(String::from_utf8_lossy(&got).into_owned())
        }
        Err(_) => None,
    }
}

#[test]
fn hostile_clients_do_not_stop_healthz_or_the_daemon() {
    let mut d = start("1s", "  request_timeout: 3s", |t| {
        t.write("backends.json", &targets_json(&["127.0.0.1"]));
    });
    d.wait("the first apply", || {
        d.t.read("upstream.conf").contains("127.0.0.1:8080")
    });
    let addr = d.base.trim_start_matches("http://").to_string();

    // 500 connections that never send a byte.
    let mut idle: Vec<TcpStream> = (0..500)
        .map(|i| TcpStream::connect(&addr).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    // A slowloris: the request head a byte at a time, never finished.
    let slow = TcpStream::connect(&addr).unwrap();
    let mut slow_reader = slow.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        let mut slow = slow;
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
            .iter()
            .cycle()
            .take(200)
        {
            if slow.write_all(&[*byte]).is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    });
    // A 10 MB body, announced: refused from its head, before the body is sent.
    let mut big = TcpStream::connect(&addr).unwrap();
    write!(
        big,
        "POST /api/v1/refresh HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        10 * 1024 * 1024
    )
    .unwrap();
    big.write_all(&[b'x'; 64 * 1024]).unwrap();
    let answer = closed_within(&mut big, Duration::from_secs(5))
        .expect("the 10 MB request is still open: its body is being read");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("max_body_bytes"), "{answer}");

    // Meanwhile /healthz answers and the daemon converges.
    assert_eq!(d.get("/healthz").unwrap(), (200, "ok\n".into()));
    d.t.write("backends.json", &targets_json(&["127.0.0.1", "127.0.0.2"]));
    d.wait("the change to be applied", || {
        d.t.read("upstream.conf").contains("127.0.0.2:8080")
    });
    assert_eq!(d.get("/healthz").unwrap().0, 200);

    // The header deadline (request_timeout) ends the slowloris and the idle connections.
    let started = Instant::now();
    let cut = closed_within(&mut slow_reader, Duration::from_secs(10))
        .expect("the slowloris connection is still open");
    assert!(!cut.contains("200 OK"), "{cut}");
    assert!(trickle.join().unwrap() || started.elapsed() < Duration::from_secs(10));
    for stream in idle.iter_mut().take(5) {
        assert!(
            closed_within(stream, Duration::from_secs(10)).is_some(),
            "an idle connection is still open"
        );
    }
    drop(idle);
    d.daemon.assert_running("after the hostile clients");
}

#[test]
fn a_client_that_stops_reading_is_cut_off() {
    let d = start("1s", "  request_timeout: 2s", |t| {
        t.write("backends.json", &targets_json(&["127.0.0.1"]));
    });
    let addr = d.base.trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(&addr).unwrap();
    // A small receive buffer (no autotuning), so that the daemon's writes wait soon.
    let size: libc::c_int = 64 * 1024;
    // SAFETY: setsockopt on a socket this test owns, with a pointer to a c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&stream),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt SO_RCVBUF");
    // Far more answers than the kernel's buffers hold, asked for at once and never read while
    // the daemon writes them.
    const REQUESTS: usize = 20_000;
    let mut writer = stream.try_clone().unwrap();
    let asking = std::thread::spawn(move || {
        let request = b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n\r\n";
        for _ in 0..REQUESTS {
            if writer.write_all(request).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_secs(5));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    let end = stream.read_to_end(&mut got);
    let answers = String::from_utf8_lossy(&got)
        .matches("HTTP/1.1 200 OK")
        .count();
    assert!(
        answers < REQUESTS,
        "all {answers} answers were waiting for a client that did not read ({end:?})"
    );
    asking.join().unwrap();
    assert_eq!(d.get("/healthz").unwrap().0, 200);
}

#[test]
fn a_large_change_names_its_first_twenty_endpoints_and_counts_all() {
    let targets: Vec<String> = (1..=25).map(|i| format!("127.0.1.{i}")).collect();
    let d = start("1s", "", |t| {
        t.write("backends.json", &targets_json(&targets));
    });
    d.wait("the change to be logged", || {
        d.json("/api/v1/changes")
            .1
            .as_array()
            .is_some_and(|c| !c.is_empty())
    });
    let (_, changes) = d.json("/api/v1/changes");
    let change = &changes[0];
    assert_schema("Change", change);
    assert_eq!(change["added_count"], 25, "{change}");
    assert_eq!(change["removed_count"], 0, "{change}");
    let added = change["added"].as_array().expect("a list");
    assert_eq!(added.len(), 20, "{change}");
    // Sorted as the set is: numerically by address.
    assert_eq!(added[0], "127.0.1.1:8080");
    assert_eq!(added[19], "127.0.1.20:8080");
}
