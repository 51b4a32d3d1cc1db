//! End-to-end tests of `elasticd run`: the daemon converges, coalesces, retries, survives bad
//! input and signals, and exits cleanly. Every daemon is killed when its test ends, pass or fail.

mod support;

use std::fs;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::{Group, Test, targets_json};

/// `elasticd run` as every test here starts it.
const RUN: [&str; 5] = ["run", "--config", "config.yaml", "--log", "debug"];

fn config(refresh: &str, settle: &str, reload: &str) -> String {
    format!(
        r#"daemon: {{ {settle}, jitter: 0, backoff_max: 4s }}
services:
  web:
    refresh: {refresh}
    port: 8080
    locators: [file: {{ path: backends.json }}]
frontends:
  fe:
    reload: {{ command: [sh, -c, "{reload}"] }}
outputs:
  - {{ template: "builtin:nginx", path: upstream.conf, frontend: fe, vars: {{ service: web }} }}
"#
    )
}

const COUNT_RELOAD: &str = "echo reload >> reloads";

/// [`config`] with the usual settle window and a reload that counts itself in `reloads`.
fn counting(refresh: &str) -> String {
    config(refresh, "settle_min: 1s, settle_max: 2s", COUNT_RELOAD)
}

/// Writes `config` and one backend (127.0.0.1), starts the daemon and waits for its first
/// reload.
fn start_applied(t: &Test, config: &str) -> Group {
    t.write("config.yaml", config);
    t.write("backends.json", &targets_json(&["127.0.0.1"]));
    let daemon = t.elasticd(RUN).daemon();
    daemon.wait_for("first apply", Duration::from_secs(10), || t.reloads() == 1);
    daemon
}

/// Waits up to `secs` for the rendered `upstream.conf` to contain `needle`; `what` names it on
/// timeout.
fn wait_for_upstream(t: &Test, daemon: &Group, what: &str, secs: u64, needle: &str) {
    daemon.wait_for(what, Duration::from_secs(secs), || {
        t.read("upstream.conf").contains(needle)
    });
}

/// Waits up to `secs` for the daemon's log to contain `needle`; `what` names it on timeout.
fn wait_for_log(daemon: &Group, what: &str, secs: u64, needle: &str) {
    daemon.wait_for(what, Duration::from_secs(secs), || {
        daemon.log().contains(needle)
    });
}

#[test]
fn converges_to_each_new_set_and_coalesces_a_burst_into_one_reload() {
    let t = Test::new();
    let daemon = start_applied(
        &t,
        &config("1s", "settle_min: 2s, settle_max: 8s", COUNT_RELOAD),
    );
    assert!(t.read("upstream.conf").contains("127.0.0.1:8080"));

    // A scale-out that trickles in over a few seconds: one reload for the whole burst.
    let mut ips = vec!["127.0.0.1".to_string()];
    for i in 2..=6 {
        ips.push(format!("127.0.0.{i}"));
        let refs: Vec<&str> = ips.iter().map(String::as_str).collect();
        t.write("backends.json", &targets_json(&refs));
        std::thread::sleep(Duration::from_millis(600));
    }
    wait_for_upstream(&t, &daemon, "the burst to land", 15, "127.0.0.6:8080");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        t.reloads(),
        2,
        "one reload for the burst:\n{}",
        daemon.log()
    );
    assert!(
        daemon.log().contains("applied web +5/-0 (6 backends)"),
        "{}",
        daemon.log()
    );

    // Removal converges too.
    t.write("backends.json", &targets_json(&["127.0.0.6"]));
    daemon.wait_for("removal", Duration::from_secs(10), || {
        let f = t.read("upstream.conf");
        f.contains("127.0.0.6:8080") && !f.contains("127.0.0.1:8080")
    });
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn a_failed_reload_is_retried_with_backoff_until_it_works() {
    let t = Test::new();
    let reload = "echo try >> reloads; test ! -e broken || { echo frontend down >&2; exit 1; }";
    t.write(
        "config.yaml",
        &config("1s", "settle_min: 1s, settle_max: 2s", reload),
    );
    t.write("broken", "");
    t.write("backends.json", &targets_json(&["127.0.0.1"]));
    let daemon = t.elasticd(RUN).daemon();
    daemon.wait_for("two failed tries", Duration::from_secs(15), || {
        t.reloads() >= 2
    });
    assert!(daemon.log().contains("frontend down"), "{}", daemon.log());
    fs::remove_file(t.join("broken")).unwrap();
    wait_for_log(&daemon, "recovery", 15, "recovered after");
    let tries = t.reloads();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(t.reloads(), tries, "no more reloads once it worked");
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn survives_a_failing_locator_and_keeps_the_last_good_file() {
    let t = Test::new();
    let daemon = start_applied(&t, &counting("1s"));
    let good = t.read("upstream.conf");

    t.write("backends.json", "{ this is not json");
    wait_for_log(
        &daemon,
        "the failure to be logged",
        10,
        "invalid backend list",
    );
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(t.read("upstream.conf"), good);
    assert_eq!(t.reloads(), 1);
    // Logged once per state change, not on every refresh.
    let errors = daemon
        .log()
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("invalid backend list"))
        .count();
    assert_eq!(errors, 1, "{}", daemon.log());

    // The guard holds an empty answer the same way.
    t.write("backends.json", "[]");
    wait_for_log(&daemon, "the guard", 10, "guard held");
    assert_eq!(t.read("upstream.conf"), good);

    t.write("backends.json", &targets_json(&["127.0.0.2"]));
    wait_for_upstream(&t, &daemon, "recovery", 15, "127.0.0.2:8080");
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn nothing_is_rendered_before_the_first_good_answer() {
    let t = Test::new();
    t.write("config.yaml", &counting("1s"));
    t.write("upstream.conf", "# the frontend's current config\n");
    let daemon = t.elasticd(RUN).daemon();
    wait_for_log(
        &daemon,
        "the missing file to be reported",
        10,
        "backends.json",
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(t.read("upstream.conf"), "# the frontend's current config\n");
    assert_eq!(t.reloads(), 0);
    t.write("backends.json", &targets_json(&["127.0.0.1"]));
    wait_for_upstream(&t, &daemon, "the first good answer", 15, "127.0.0.1:8080");
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn sighup_with_a_bad_config_keeps_running_and_a_good_one_is_swapped_in() {
    let t = Test::new();
    let good_config = counting("1s");
    let daemon = start_applied(&t, &good_config);

    t.write(
        "config.yaml",
        "services: { web: { locators: [nope: {}] } }\n",
    );
    daemon.signal(Signal::SIGHUP);
    wait_for_log(&daemon, "the rejection", 10, "still running the old one");
    assert!(daemon.log().contains("config.yaml:1:"), "{}", daemon.log());
    // Still working with the old config.
    t.write("backends.json", &targets_json(&["127.0.0.1", "127.0.0.2"]));
    wait_for_upstream(
        &t,
        &daemon,
        "convergence on the old config",
        10,
        "127.0.0.2:8080",
    );

    // A good new config: a new upstream name, same service, so its last good set is kept.
    t.write(
        "config.yaml",
        &good_config.replace(
            "vars: { service: web }",
            "vars: { service: web, upstream: pool }",
        ),
    );
    daemon.signal(Signal::SIGHUP);
    wait_for_upstream(
        &t,
        &daemon,
        "the new config to apply",
        10,
        "upstream pool {",
    );
    assert!(t.read("upstream.conf").contains("127.0.0.2:8080"));
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn sigusr1_refreshes_now_and_sigterm_exits_0() {
    let t = Test::new();
    // Refresh hourly: only the start-up locate and SIGUSR1 can see a change.
    let daemon = start_applied(&t, &counting("1h"));
    t.write("backends.json", &targets_json(&["127.0.0.9"]));
    std::thread::sleep(Duration::from_secs(2));
    assert!(!t.read("upstream.conf").contains("127.0.0.9"));
    daemon.signal(Signal::SIGUSR1);
    wait_for_upstream(&t, &daemon, "the SIGUSR1 refresh", 10, "127.0.0.9:8080");
    let started = Instant::now();
    assert_eq!(daemon.stop(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_bad_config_at_start_exits_2() {
    let t = Test::new().config("services: {}\noutputs: 3\n");
    let out = t.elasticd(["run", "--config", "config.yaml"]).run();
    assert_eq!(out.code, 2);
    let stderr = out.stderr;
    assert!(stderr.contains("config.yaml:2:"), "{stderr}");
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[test]
fn a_frontend_back_in_its_desired_state_stops_being_retried() {
    let t = Test::new();
    // The checker rejects any file that mentions 127.0.0.2.
    let cfg = counting("1s").replace(
        "  fe:\n",
        "  fe:\n    check: [sh, -c, \"! grep -q 127.0.0.2 upstream.conf\"]\n",
    );
    let daemon = start_applied(&t, &cfg);
    t.write("backends.json", &targets_json(&["127.0.0.1", "127.0.0.2"]));
    wait_for_log(&daemon, "the failed check", 10, "check failed");
    // Back to what is on disk: nothing left to do, so no retries and no busy loop.
    t.write("backends.json", &targets_json(&["127.0.0.1"]));
    std::thread::sleep(Duration::from_secs(4));
    let pid = daemon.pid();
    let before = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_seconds(pid) - before;
    assert!(used < 0.5, "daemon used {used}s of CPU in 3s while idle");
    assert_eq!(t.reloads(), 1);
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn sighup_during_a_slow_locate_asks_again_with_the_new_config() {
    let t = Test::new();
    t.write_executable(
        "plugin.sh",
        "#!/bin/sh\nsleep \"$(cat delay)\"\necho '[{\"targets\": [\"127.0.0.1:81\"]}]'\n",
    );
    t.write("delay", "0");
    let cfg = |timeout: &str| {
        format!(
            r#"daemon: {{ settle_min: 1s, settle_max: 2s, jitter: 0 }}
services:
  web:
    refresh: 1h
    locators: [exec: {{ command: [./plugin.sh], timeout: {timeout} }}]
outputs:
  - {{ template: "builtin:nginx", path: upstream.conf, vars: {{ service: web }} }}
"#
        )
    };
    t.write("config.yaml", &cfg("30s"));
    let daemon = t.elasticd(RUN).daemon();
    wait_for_upstream(&t, &daemon, "first apply", 10, "127.0.0.1:81");
    // A slow locate is running when the service's config changes.
    t.write("delay", "3");
    daemon.signal(Signal::SIGUSR1);
    std::thread::sleep(Duration::from_millis(500));
    t.write("delay", "0");
    t.write(
        "config.yaml",
        &cfg("20s").replace(
            "vars: { service: web }",
            "vars: { service: web, upstream: pool }",
        ),
    );
    daemon.signal(Signal::SIGHUP);
    // Without asking again, the next answer would come an hour later.
    wait_for_upstream(
        &t,
        &daemon,
        "the new config's answer",
        10,
        "upstream pool {",
    );
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn a_failing_on_change_hook_is_retried_with_backoff_until_it_succeeds() {
    let t = Test::new();
    t.write_executable(
        "plugins/actions/hook",
        "#!/bin/sh\ncat > last-request.json\n\
         if [ -e hook-fails ]; then echo 'chat API down' >&2; echo x >> failures; exit 1; fi\n\
         echo ok >> acks\n",
    );
    t.write("hook-fails", "");
    t.write("backends.json", &targets_json(&["127.0.0.1"]));
    t.write(
        "config.yaml",
        r#"daemon: { settle_min: 100ms, settle_max: 500ms, jitter: 0, backoff_max: 2s }
services:
  web:
    refresh: 1s
    port: 8080
    locators: [file: { path: backends.json }]
    on_change: [exec: [hook]]
outputs:
  - { template: "builtin:nginx", path: upstream.conf, vars: { service: web } }
"#,
    );
    let daemon = t.elasticd(RUN).daemon();
    // Retried with no new change to trigger it.
    daemon.wait_for("two failed attempts", Duration::from_secs(15), || {
        t.lines("failures") >= 2
    });
    assert!(daemon.log().contains("chat API down"), "{}", daemon.log());
    fs::remove_file(t.join("hook-fails")).unwrap();
    daemon.wait_for("the hook to succeed", Duration::from_secs(15), || {
        t.lines("acks") == 1
    });
    let request: serde_json::Value = t.json("last-request.json");
    assert_eq!(request["changes"][0]["added"][0]["address"], "127.0.0.1");
    t.write("backends.json", &targets_json(&["127.0.0.2"]));
    daemon.wait_for("the next change", Duration::from_secs(15), || {
        t.lines("acks") == 2
    });
    let request: serde_json::Value = t.json("last-request.json");
    assert_eq!(request["changes"][0]["added"][0]["address"], "127.0.0.2");
    assert_eq!(request["changes"][0]["removed"][0]["address"], "127.0.0.1");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(t.lines("acks"), 2, "acknowledged changes are not repeated");
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn a_stopped_frontend_is_named_and_its_apply_is_never_also_logged_as_applied() {
    let t = Test::new();
    let config = config("1h", "settle_min: 1s, settle_max: 2s", "true").replace(
        r#"reload: { command: [sh, -c, "true"] }"#,
        "reload: { signal: HUP, pidfile: fe.pid }",
    );
    t.write("config.yaml", &config);
    // What `nginx -t` leaves behind when nginx is not running.
    t.write("fe.pid", "");
    t.write("backends.json", &targets_json(&["127.0.0.1", "127.0.0.2"]));
    let daemon = t.elasticd(RUN).daemon();
    daemon.wait_for("two failed reloads", Duration::from_secs(15), || {
        daemon.log().matches("not applied; retrying").count() >= 2
    });
    let log = daemon.log();
    assert!(
        log.contains("frontend `fe`: fe does not seem to be running (empty pidfile "),
        "{log}"
    );
    assert!(!log.contains("applied web"), "{log}");
    assert!(log.contains("started: 1 service, 1 output"), "{log}");

    // The frontend starts: the owed reload goes through, and that apply names the endpoints.
    let mut sh = std::process::Command::new("sh");
    sh.args([
        "-c",
        "trap 'echo hup >> hups' HUP; while :; do sleep 0.1; done",
    ])
    .current_dir(t.path());
    let frontend = support::Group::spawn("frontend", sh, &t.join("frontend.log"));
    t.write("fe.pid", &format!("{}\n", frontend.pid()));
    daemon.wait_for("the reload", Duration::from_secs(15), || t.exists("hups"));
    wait_for_log(&daemon, "the applied line", 5, "applied web");
    assert!(
        daemon.log().contains(
            "applied web +2/-0 (2 backends) [+127.0.0.1:8080 +127.0.0.2:8080]: 0 outputs written, reloaded fe in "
        ),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn a_same_size_rewrite_in_place_of_a_settled_file_is_picked_up() {
    let t = Test::new();
    let daemon = start_applied(&t, &counting("1s"));
    // Long enough for the file to settle (3 s), so the passes since reuse the parsed answer.
    std::thread::sleep(Duration::from_secs(6));
    let before = fs::metadata(t.join("backends.json")).unwrap().len();
    // The same inode and the same size: only the times tell the file changed.
    fs::write(t.join("backends.json"), targets_json(&["127.0.0.2"])).unwrap();
    assert_eq!(fs::metadata(t.join("backends.json")).unwrap().len(), before);
    wait_for_upstream(&t, &daemon, "the rewrite to land", 10, "127.0.0.2:8080");
    assert!(!t.read("upstream.conf").contains("127.0.0.1:8080"));
    assert_eq!(daemon.stop(), Some(0));
}
