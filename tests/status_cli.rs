//! `elasticd status` against a real `elasticd run`: the table (snapshotted with times, paths and
//! hashes redacted), `--json`, `--url`, the Unix socket, readiness in the exit code, and the
//! errors when there is no server to ask.

mod support;

use std::time::Duration;

use support::{Group, Test, free_port, http_get, targets_json};

const RUN: [&str; 5] = ["run", "--config", "config.yaml", "--log", "debug"];

/// One `web` service refreshed every `refresh`, its file rewritten by the test.
fn config(server: &str, refresh: &str) -> String {
    format!(
        r#"daemon: {{ settle_min: 100ms, settle_max: 500ms, jitter: 0 }}
server: {server}
services:
  web:
    refresh: {refresh}
    port: 8080
    locators: [file: {{ path: web.json }}]
frontends:
  fe:
    reload: {{ command: [sh, -c, "echo reload >> reloads"] }}
outputs:
  - {{ template: "builtin:nginx", path: web.conf, frontend: fe, vars: {{ service: web }} }}
"#
    )
}

/// Times, the version and hashes vary from run to run (and so do the dir and the port, which
/// [`snapshot`] replaces).
const FILTERS: [(&str, &str); 4] = [
    (r"\d+[smhd]( \d+[smhd])? ago", "[AGO]"),
    (r"in \d+[smhd]( \d+[smhd])?", "[IN]"),
    (r"elasticd \d+\.\d+\.\d+\S*", "elasticd [VERSION]"),
    (r"\b[0-9a-f]{12}\b", "[SHA]"),
];

fn snapshot(name: &str, t: &Test, port: u16, text: &str) {
    let text = text
        .replace(&t.path().display().to_string(), "[DIR]")
        .replace(&format!(":{port}"), ":[PORT]");
    let mut settings = insta::Settings::clone_current();
    for (re, with) in FILTERS {
        settings.add_filter(re, with);
    }
    settings.bind(|| insta::assert_snapshot!(name, text));
}

fn start_tcp(t: &Test) -> (Group, u16) {
    let port = free_port();
    t.write(
        "config.yaml",
        &config(&format!("{{ listen: [\"127.0.0.1:{port}\"] }}"), "1h"),
    );
    t.write("web.json", &targets_json(&["127.0.0.1", "127.0.0.2"]));
    let daemon = t.elasticd(RUN).daemon();
    daemon.wait_for("readiness", Duration::from_secs(15), || {
        t.reloads() == 1 && http_get(port).is_ok_and(|p| p.contains(">READY<"))
    });
    (daemon, port)
}

#[test]
fn status_prints_a_table_json_on_request_and_exits_0_when_ready() {
    let t = Test::new();
    let (mut daemon, port) = start_tcp(&t);
    let table = t
        .elasticd(["status", "--config", "config.yaml"])
        .run()
        .success();
    snapshot("table", &t, port, &table.stdout);
    assert_eq!(table.stderr, "");

    let json = t
        .elasticd(["status", "--config", "config.yaml", "--json"])
        .run()
        .success()
        .json();
    assert_eq!(json["ready"]["ready"], true, "{json}");
    assert_eq!(json["services"][0]["name"], "web");
    assert_eq!(json["services"][0]["backends"].as_array().unwrap().len(), 2);
    assert_eq!(json["frontends"][0]["name"], "fe");

    // --url needs no config at all.
    let by_url = t
        .elasticd([
            "status",
            "--config",
            "missing.yaml",
            "--url",
            &format!("http://127.0.0.1:{port}"),
        ])
        .run()
        .success();
    assert_eq!(by_url.stdout.lines().next(), table.stdout.lines().next());
    assert_eq!(by_url.stdout.lines().count(), table.stdout.lines().count());
    daemon.assert_running("after status");
}

#[test]
fn status_reads_the_unix_socket_and_exits_1_when_not_ready() {
    let t = Test::new();
    t.write(
        "config.yaml",
        &config("{ socket: { path: elasticd.sock } }", "1s"),
    );
    let daemon = t.elasticd(RUN).daemon();
    daemon.wait_for("the socket", Duration::from_secs(15), || {
        t.exists("elasticd.sock") && daemon.log().contains("web.json")
    });
    let out = t.elasticd(["status", "--config", "config.yaml"]).run();
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stdout.contains(": NOT READY\n"), "{out}");
    assert!(out.stdout.contains("at socket "), "{out}");
    assert!(
        out.stdout
            .contains("  not ready: service web: no good backend set"),
        "{out}"
    );

    t.write("web.json", &targets_json(&["127.0.0.3"]));
    let sock = t.join("elasticd.sock").display().to_string();
    daemon.wait_for("readiness", Duration::from_secs(15), || {
        t.elasticd(["status", "--socket", &sock, "--json"])
            .run()
            .code
            == 0
    });
    let json = t
        .elasticd(["status", "--socket", &sock, "--json"])
        .run()
        .success()
        .json();
    assert_eq!(json["services"][0]["backends"][0]["address"], "127.0.0.3");
}

#[test]
fn status_says_why_it_has_nothing_to_show() {
    let t = Test::new();
    let no_server = config("{}", "1h").replace("server: {}\n", "");
    t.write("config.yaml", &no_server);
    let no_server = t.elasticd(["status", "--config", "config.yaml"]).run();
    assert_eq!(no_server.code, 2, "{no_server}");

    let port = free_port();
    t.write(
        "down.yaml",
        &config(&format!("{{ listen: [\"127.0.0.1:{port}\"] }}"), "1h"),
    );
    let down = t.elasticd(["status", "--config", "down.yaml"]).run();
    assert_eq!(down.code, 3, "{down}");

    let https = t
        .elasticd(["status", "--url", "https://127.0.0.1:9797"])
        .run();
    assert_eq!(https.code, 2, "{https}");

    let messages = format!("{}{}{}", no_server.stderr, down.stderr, https.stderr);
    snapshot("errors", &t, port, &messages);
}
