//! Inputs that used to crash elasticd (issue 16): deeply nested YAML, durations out of range,
//! backends with port 0, and server names that collide. Each test runs the real binary; every
//! daemon it starts is killed when the test ends, pass or fail.

use std::fs;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

mod support;

use support::{Group, Output, Test, path_with_sbin, program};

/// `elasticd ARGS` in the test's dir, with the sbin dirs on PATH (a frontend's check runs
/// `haproxy`) and no log level from the caller's environment.
fn elasticd(t: &Test, args: &[&str]) -> support::Cmd {
    t.elasticd(args)
        .env("PATH", path_with_sbin())
        .env_remove("ELASTICD_LOG")
}

/// Runs a one-shot command to completion (at most 60 s; killed after that).
fn run(t: &Test, args: &[&str]) -> Output {
    elasticd(t, args).run_within(Duration::from_secs(60))
}

/// `elasticd run --log debug` in the test's dir, logging to `daemon.log`.
fn start_daemon(t: &Test) -> Group {
    elasticd(t, &["run", "--config", "config.yaml", "--log", "debug"]).daemon()
}

/// How long a daemon test waits for each thing it expects in the log.
const WAIT: Duration = Duration::from_secs(20);

/// Sends SIGTERM to a daemon that must still be running, and returns its exit code.
fn stop(mut daemon: Group) -> Option<i32> {
    daemon.assert_running(&daemon.log());
    daemon.stop()
}

fn daemon_config(daemon: &str, refresh: &str, backends: &str) -> String {
    format!(
        r#"daemon: {{ {daemon} }}
services:
  web:
    refresh: {refresh}
    port: 8080
    locators: [file: {{ path: {backends} }}]
outputs:
  - {{ template: "builtin:nginx", path: upstream.conf, vars: {{ service: web }} }}
"#
    )
}

/// `- ` 11,000 times: 22 KB of YAML nested 11,000 lists deep.
fn deep_dashes() -> String {
    format!("{}x\n", "- ".repeat(11_000))
}

/// 3,000 block mappings, each inside the one before.
fn deep_maps() -> String {
    (0..3_000)
        .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
        .collect()
}

/// 28 anchors, each 250 levels deeper than the last through an alias: 14 KB that loaded into a
/// tree 7,000 levels deep.
fn alias_chain() -> String {
    let open = "[".repeat(250);
    let close = "]".repeat(250);
    let mut text = format!("- &a0 {open}x{close}\n");
    for k in 1..28 {
        text.push_str(&format!("- &a{k} {open}*a{}{close}\n", k - 1));
    }
    text
}

/// `code` is -1 exactly when the process was killed by a signal.
fn assert_not_killed(what: &str, ran: &Output) {
    assert_ne!(
        ran.code, -1,
        "{what} was killed by a signal:\n{}",
        ran.stderr
    );
    assert_ne!(ran.code, 101, "{what} panicked:\n{}", ran.stderr);
}

// ---- 1. Deeply nested YAML ---------------------------------------------------------------------

#[test]
fn deeply_nested_config_yaml_is_a_config_error_with_a_location() {
    let t = Test::new();
    let alias_at = "2:257";
    for (text, at) in [
        (deep_dashes(), "1:511"),
        (deep_maps(), "256:256"),
        (alias_chain(), alias_at),
    ] {
        t.write("config.yaml", &text);
        for args in [
            &["check", "--config", "config.yaml"][..],
            &["render", "--config", "config.yaml"],
            &["run", "--config", "config.yaml"],
        ] {
            let ran = run(&t, args);
            assert_not_killed(args[0], &ran);
            assert_eq!(ran.code, 2, "{args:?}:\n{}", ran.stderr);
            let expected = format!(
                "config.yaml:{at}: YAML syntax error: lists and mappings are nested more than 255 levels deep here"
            );
            assert!(ran.stderr.contains(&expected), "{args:?}:\n{}", ran.stderr);
        }
    }
}

#[test]
fn flow_style_nesting_is_still_rejected_as_before() {
    let t = Test::new();
    t.write("config.yaml", &"[".repeat(11_000));
    let ran = run(&t, &["check", "--config", "config.yaml"]);
    assert_not_killed("check", &ran);
    ran.exited_saying(2, "YAML syntax error");
}

#[test]
fn a_deeply_nested_discovery_document_fails_its_locator_not_the_process() {
    let t = Test::new();
    t.write(
        "config.yaml",
        &daemon_config("jitter: 0", "1s", "backends.yaml"),
    );
    t.write("backends.yaml", &deep_dashes());
    let ran = run(&t, &["render", "--config", "config.yaml"]);
    assert_not_killed("render", &ran);
    ran.exited_saying(
        1,
        "line 1:511: lists and mappings are nested more than 255 levels deep",
    );
    assert!(!t.exists("upstream.conf"));
    t.write("backends.yaml", &deep_maps());
    let ran = run(&t, &["locate", "--config", "config.yaml"]);
    assert_not_killed("locate", &ran);
    assert!(ran.stderr.contains("line 256:256"), "{}", ran.stderr);
}

#[test]
fn a_running_daemon_survives_a_deeply_nested_file_sd_document() {
    let t = Test::new();
    let settle = "settle_min: 100ms, settle_max: 200ms, jitter: 0, backoff_max: 1s";
    t.write("config.yaml", &daemon_config(settle, "1s", "backends.yaml"));
    t.write("backends.yaml", "- targets: [127.0.0.1]\n");
    let mut daemon = start_daemon(&t);
    daemon.wait_for_log("the first apply", WAIT, |_| {
        t.read("upstream.conf").contains("127.0.0.1:8080")
    });
    let failures = |log: &str| log.matches("nested more than 255 levels deep").count();
    for text in [deep_dashes(), deep_maps(), alias_chain()] {
        let before = failures(&daemon.log());
        t.write("backends.yaml", &text);
        daemon.wait_for_log("the locator to fail", WAIT, |log| failures(log) > before);
    }
    // As deep as allowed: read (and refused, it is no list of backends) without a crash.
    t.write("backends.yaml", &format!("{}x\n", "- ".repeat(255)));
    daemon.wait_for_log("the locator to fail", WAIT, |log| {
        log.contains("expected a mapping") || log.contains("expected text, found a list")
    });
    // Still running, and still converging once the file is fixed.
    t.write("backends.yaml", "- targets: [127.0.0.2]\n");
    daemon.wait_for_log("the fixed file to apply", WAIT, |_| {
        t.read("upstream.conf").contains("127.0.0.2:8080")
    });
    assert_eq!(stop(daemon), Some(0));
}

#[test]
fn nesting_up_to_the_limit_still_loads_everywhere() {
    let t = Test::new();
    // 250 levels inside an output's `vars` (255 with the levels above it), which templates get.
    let deep = format!("{}1{}", "[".repeat(250), "]".repeat(250));
    let config = format!(
        r#"services:
  web: {{ port: 80, locators: [static: ["10.0.0.1"]] }}
outputs:
  - {{ template: "builtin:nginx", path: upstream.conf, vars: {{ service: web, deep: {deep} }} }}
"#
    );
    t.write("config.yaml", &config);
    let ran = run(&t, &["check", "--config", "config.yaml"]);
    assert_eq!(ran.code, 0, "{ran}");
    let ran = run(&t, &["render", "--config", "config.yaml"]);
    assert_eq!(ran.code, 0, "{ran}");
    assert!(t.read("upstream.conf").contains("10.0.0.1:80"));
}

// ---- 3. Durations out of range -----------------------------------------------------------------

const HUGE: &str = "9223372036854775807";

#[test]
fn durations_out_of_range_are_reported_by_check_with_a_location() {
    let t = Test::new();
    let cases = [
        (
            "jitter: 0",
            "300000000y",
            "config.yaml:4:14: service `web`: refresh must be at most 1 year",
        ),
        (
            "jitter: 0",
            HUGE,
            "config.yaml:4:14: service `web`: refresh must be at most 1 year",
        ),
        (
            "settle_min: 9223372036854775807",
            "1s",
            "config.yaml:1:23: `9223372036854775807` is too long: this setting takes at most 1 day",
        ),
        (
            "settle_max: 9223372036854775807",
            "1s",
            "config.yaml:1:23: `9223372036854775807` is too long: this setting takes at most 1 day",
        ),
        (
            "settle_min: 2h",
            "1s",
            "config.yaml:1:23: settle_min must be at most 1h",
        ),
        (
            "backoff_max: 300000000y",
            "1s",
            "config.yaml:1:24: `300000000y` is too long",
        ),
    ];
    for (daemon, refresh, expected) in cases {
        t.write(
            "config.yaml",
            &daemon_config(daemon, refresh, "backends.json"),
        );
        let ran = run(&t, &["check", "--config", "config.yaml"]);
        assert_eq!(ran.code, 2, "{daemon} / {refresh}: {ran}");
        assert!(ran.stderr.contains(expected), "{daemon} / {refresh}: {ran}");
    }
}

#[test]
fn the_daemon_refuses_durations_out_of_range_instead_of_panicking() {
    let t = Test::new();
    t.write("backends.json", r#"[{"targets": ["127.0.0.1"]}]"#);
    for (daemon, refresh) in [
        ("jitter: 0", "300000000y"),
        ("jitter: 0", HUGE),
        ("settle_min: 9223372036854775807", "1s"),
        ("settle_max: 9223372036854775807", "1s"),
    ] {
        t.write(
            "config.yaml",
            &daemon_config(daemon, refresh, "backends.json"),
        );
        let ran = run(&t, &["run", "--config", "config.yaml"]);
        assert_eq!(ran.code, 2, "{daemon} / {refresh}: {ran}");
        assert!(
            ran.stderr.contains("at most"),
            "{daemon} / {refresh}: {ran}"
        );
    }
}

#[test]
fn sighup_into_a_huge_refresh_keeps_the_old_config() {
    let t = Test::new();
    let settle = "settle_min: 100ms, settle_max: 200ms, jitter: 0";
    t.write("config.yaml", &daemon_config(settle, "1s", "backends.json"));
    t.write("backends.json", r#"[{"targets": ["127.0.0.1"]}]"#);
    let mut daemon = start_daemon(&t);
    daemon.wait_for_log("the first apply", WAIT, |_| {
        t.read("upstream.conf").contains("127.0.0.1:8080")
    });
    for refresh in ["300000000y", HUGE] {
        t.write(
            "config.yaml",
            &daemon_config(settle, refresh, "backends.json"),
        );
        let before = daemon.log().matches("still running the old one").count();
        daemon.signal(Signal::SIGHUP);
        daemon.wait_for_log("the reload to be refused", WAIT, |log| {
            log.matches("still running the old one").count() > before
        });
        assert!(daemon.log().contains("refresh must be at most 1 year"));
    }
    t.write("backends.json", r#"[{"targets": ["127.0.0.2"]}]"#);
    daemon.wait_for_log("the old config to keep working", WAIT, |_| {
        t.read("upstream.conf").contains("127.0.0.2:8080")
    });
    assert_eq!(stop(daemon), Some(0));
}

#[test]
fn the_longest_durations_allowed_run_and_reload() {
    let t = Test::new();
    let longest = "settle_min: 1h, settle_max: 24h, backoff_max: 24h, jitter: 1";
    t.write(
        "config.yaml",
        &daemon_config(longest, "1y", "backends.json"),
    );
    t.write("backends.json", r#"[{"targets": ["127.0.0.1"]}]"#);
    let mut daemon = start_daemon(&t);
    daemon.wait_for_log("the first answer", WAIT, |log| log.contains("change: +1"));
    // A new config (a settle change) and an immediate refresh (a second change).
    daemon.signal(Signal::SIGHUP);
    daemon.wait_for_log("the reload", WAIT, |log| log.contains("SIGHUP"));
    t.write("backends.json", r#"[{"targets": ["127.0.0.2"]}]"#);
    daemon.signal(Signal::SIGUSR1);
    daemon.wait_for_log("the refresh", WAIT, |log| log.contains("change: +1 -1"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(stop(daemon), Some(0));
}

// ---- 5. Port 0 in backend objects --------------------------------------------------------------

#[test]
fn port_zero_in_a_backend_object_is_rejected_on_every_document_path() {
    let t = Test::new();
    let json = r#"[{"address": "127.0.0.1", "port": 0}]"#;
    t.write("backends.json", json);
    t.write("backends.yaml", "- address: 127.0.0.1\n  port: 0\n");
    let exec = format!(
        "exec: {{ command: [sh, -c, \"echo '{}'\"] }}",
        json.replace('"', "\\\"")
    );
    for locator in [
        "file: { path: backends.json }",
        "file: { path: backends.yaml }",
        exec.as_str(),
    ] {
        let config = format!(
            r#"services:
  web:
    port: 8080
    locators: [{locator}]
outputs:
  - {{ template: "builtin:haproxy", path: web.cfg, vars: {{ service: web }} }}
"#
        );
        t.write("config.yaml", &config);
        for command in ["render", "locate"] {
            let ran = run(&t, &[command, "--config", "config.yaml"]);
            assert_eq!(ran.code, 1, "{locator} {command}: {ran}");
            assert!(
                ran.stderr
                    .contains("bad backend `127.0.0.1`: `0` is not a port number (1-65535)"),
                "{locator} {command}: {ran}"
            );
        }
        assert!(!t.exists("web.cfg"), "{locator}: {}", t.read("web.cfg"));
    }
}

#[test]
fn a_tampered_state_file_is_not_rendered_when_the_locator_fails() {
    let t = Test::new();
    t.write("backends.json", r#"[{"targets": ["127.0.0.1:80"]}]"#);
    t.write(
        "config.yaml",
        r#"state_file: state.json
services:
  web:
    locators: [file: { path: backends.json }]
outputs:
  - { template: "builtin:haproxy", path: web.cfg, vars: { service: web } }
"#,
    );
    let first = run(&t, &["render", "--config", "config.yaml"]);
    assert_eq!(first.code, 0, "{first}");
    let good = t.read("web.cfg");
    // The locator fails from now on, so the state's last good set is what would be rendered.
    fs::remove_file(t.join("backends.json")).unwrap();
    let state = t.read("state.json");
    for (from, to) in [
        (r#""port":80"#, r#""port":0"#),
        (r#""weight":1"#, r#""weight":4000000000"#),
    ] {
        assert!(state.contains(from), "{state}");
        t.write("state.json", &state.replace(from, to));
        let ran = run(&t, &["render", "--config", "config.yaml"]);
        assert_eq!(ran.code, 1, "{ran}");
        assert!(
            ran.stderr.contains("holds a bad backend `127.0.0.1:"),
            "{to}: {ran}"
        );
        assert_eq!(t.read("web.cfg"), good, "{to}");
    }
}

// ---- 6. Server names that collide --------------------------------------------------------------

const COLLIDING: &str = r#"[{"targets": ["10.0.0.1:80", "10-0-0-1:80", "10.0.0.2:80",
    "web-1.example:80", "web.1.example:80", "web-1-example:80", "web-1-example-80:2"]}]"#;

fn server_names(text: &str, keyword: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix(keyword))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn assert_unique(names: &[String], what: &str, text: &str) {
    let set: std::collections::HashSet<&String> = names.iter().collect();
    assert_eq!(set.len(), names.len(), "{what}: names repeat:\n{text}");
}

#[test]
fn colliding_server_names_are_made_unique_and_haproxy_accepts_the_file() {
    let t = Test::new();
    t.write("backends.json", COLLIDING);
    // Host names are not resolved by `haproxy -c` with `init-addr none`.
    t.write("main.cfg",
        "defaults\n    mode http\n    timeout connect 1s\n    timeout client 1s\n    timeout server 1s\n    \
         default-server init-addr none\nfrontend fe\n    bind 127.0.0.1:18080\n    default_backend web\n",
    );
    let config = r#"services:
  web:
    locators: [file: { path: backends.json }]
frontends:
  haproxy:
    check: [haproxy, -c, -q, -f, main.cfg, -f, "{staged}"]
outputs:
  - { template: "builtin:haproxy", path: web.cfg, frontend: haproxy, vars: { service: web } }
  - { template: "builtin:haproxy-tcp", path: web-tcp.cfg, vars: { service: web } }
  - { template: "builtin:varnish", path: web.vcl, vars: { service: web } }
  - { template: "builtin:apache", path: web.conf, vars: { service: web, route: true } }
"#;
    t.write("config.yaml", config);
    let ran = run(&t, &["render", "--config", "config.yaml"]);
    assert_eq!(ran.code, 0, "{ran}");

    let haproxy = t.read("web.cfg");
    let names = server_names(&haproxy, "server ");
    assert_eq!(
        names,
        [
            // Sorted: IPs first, then host names. Names that don't collide are as they always were.
            "web_10_0_0_1_80",
            "web_10_0_0_2_80",
            "web_10_0_0_1_80_2",
            // web-1-example:80, then web-1-example-80:2, whose own name is the first free
            // suffix of the group; web-1.example and web.1.example get the next ones.
            "web_web_1_example_80",
            "web_web_1_example_80_2",
            "web_web_1_example_80_3",
            "web_web_1_example_80_4",
        ],
        "{haproxy}"
    );
    let ok = Command::new(program("haproxy", "haproxy"))
        .args(["-c", "-f", "main.cfg", "-f", "web.cfg"])
        .current_dir(t.path())
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let tcp = t.read("web-tcp.cfg");
    assert_eq!(server_names(&tcp, "server "), names, "{tcp}");
    let vcl = t.read("web.vcl");
    let backends = server_names(&vcl, "backend ");
    assert_eq!(backends.len(), 7, "{vcl}");
    assert_unique(&backends, "varnish backends", &vcl);
    for name in &backends {
        assert!(vcl.contains(&format!("web.add_backend({name});")), "{vcl}");
    }
    let apache = t.read("web.conf");
    let routes: Vec<String> = apache
        .split("route=")
        .skip(1)
        .filter_map(|r| r.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert_eq!(routes, names, "{apache}");
}

#[test]
fn before_the_fix_haproxy_refused_such_a_file() {
    // The file the old names made: the check this output relies on says no.
    let t = Test::new();
    t.write("main.cfg",
        "defaults\n    mode http\n    timeout connect 1s\n    timeout client 1s\n    timeout server 1s\n    \
         default-server init-addr none\nfrontend fe\n    bind 127.0.0.1:18080\n    default_backend web\n",
    );
    t.write("web.cfg",
        "backend web\n    server web_10_0_0_1_80 10.0.0.1:80\n    server web_10_0_0_1_80 10-0-0-1:80\n",
    );
    let out = Command::new(program("haproxy", "haproxy"))
        .args(["-c", "-f", "main.cfg", "-f", "web.cfg"])
        .current_dir(t.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("please use distinct names"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
