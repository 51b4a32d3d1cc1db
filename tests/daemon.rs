//! End-to-end tests of `elasticd run`: the daemon converges, coalesces, retries, survives bad
//! input and signals, and exits cleanly. Every daemon is killed when its test ends, pass or fail.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        let log = dir.join("daemon.log");
        let child = Command::new(env!("CARGO_BIN_EXE_elasticd"))
            .args(["run", "--config", "config.yaml", "--log", "debug"])
            .current_dir(dir)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon {
            child: Some(child),
            log,
        }
    }

    fn signal(&self, signal: Signal) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        kill(Pid::from_raw(pid), signal).unwrap();
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and returns the exit code.
    fn stop(mut self) -> i32 {
        self.signal(Signal::SIGTERM);
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("daemon did not stop within 10s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    // Write-then-rename, as a real producer of file_sd files should, so the daemon never reads
    // half a file.
    let tmp = dir.join(format!(".{name}.tmp"));
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, dir.join(name)).unwrap();
}

fn read(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name)).unwrap_or_default()
}

fn reloads(dir: &Path) -> usize {
    read(dir, "reloads").lines().count()
}

fn backends(ips: &[&str]) -> String {
    let t: Vec<String> = ips.iter().map(|ip| format!("\"{ip}\"")).collect();
    format!("[{{\"targets\": [{}]}}]", t.join(", "))
}

fn wait_for(what: &str, timeout: Duration, daemon: &Daemon, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}; daemon log:\n{}",
                daemon.log()
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

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

#[test]
fn converges_to_each_new_set_and_coalesces_a_burst_into_one_reload() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "config.yaml",
        &config("1s", "settle_min: 2s, settle_max: 8s", COUNT_RELOAD),
    );
    write(d, "backends.json", &backends(&["127.0.0.1"]));
    let daemon = Daemon::start(d);
    wait_for("first apply", Duration::from_secs(10), &daemon, || {
        reloads(d) == 1
    });
    assert!(read(d, "upstream.conf").contains("127.0.0.1:8080"));

    // A scale-out that trickles in over a few seconds: one reload for the whole burst.
    let mut ips = vec!["127.0.0.1".to_string()];
    for i in 2..=6 {
        ips.push(format!("127.0.0.{i}"));
        let refs: Vec<&str> = ips.iter().map(String::as_str).collect();
        write(d, "backends.json", &backends(&refs));
        std::thread::sleep(Duration::from_millis(600));
    }
    wait_for(
        "the burst to land",
        Duration::from_secs(15),
        &daemon,
        || read(d, "upstream.conf").contains("127.0.0.6:8080"),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(reloads(d), 2, "one reload for the burst:\n{}", daemon.log());
    assert!(
        daemon.log().contains("applied web +5/-0 (6 backends)"),
        "{}",
        daemon.log()
    );

    // Removal converges too.
    write(d, "backends.json", &backends(&["127.0.0.6"]));
    wait_for("removal", Duration::from_secs(10), &daemon, || {
        let f = read(d, "upstream.conf");
        f.contains("127.0.0.6:8080") && !f.contains("127.0.0.1:8080")
    });
    assert_eq!(daemon.stop(), 0);
}

#[test]
fn a_failed_reload_is_retried_with_backoff_until_it_works() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let reload = "echo try >> reloads; test ! -e broken || { echo frontend down >&2; exit 1; }";
    write(
        d,
        "config.yaml",
        &config("1s", "settle_min: 1s, settle_max: 2s", reload),
    );
    write(d, "broken", "");
    write(d, "backends.json", &backends(&["127.0.0.1"]));
    let daemon = Daemon::start(d);
    wait_for("two failed tries", Duration::from_secs(15), &daemon, || {
        reloads(d) >= 2
    });
    assert!(daemon.log().contains("frontend down"), "{}", daemon.log());
    fs::remove_file(d.join("broken")).unwrap();
    wait_for("recovery", Duration::from_secs(15), &daemon, || {
        daemon.log().contains("recovered after")
    });
    let tries = reloads(d);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(reloads(d), tries, "no more reloads once it worked");
    assert_eq!(daemon.stop(), 0);
}

#[test]
fn survives_a_failing_locator_and_keeps_the_last_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "config.yaml",
        &config("1s", "settle_min: 1s, settle_max: 2s", COUNT_RELOAD),
    );
    write(d, "backends.json", &backends(&["127.0.0.1"]));
    let daemon = Daemon::start(d);
    wait_for("first apply", Duration::from_secs(10), &daemon, || {
        reloads(d) == 1
    });
    let good = read(d, "upstream.conf");

    write(d, "backends.json", "{ this is not json");
    wait_for(
        "the failure to be logged",
        Duration::from_secs(10),
        &daemon,
        || daemon.log().contains("invalid backend list"),
    );
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(read(d, "upstream.conf"), good);
    assert_eq!(reloads(d), 1);
    // Logged once per state change, not on every refresh.
    let errors = daemon
        .log()
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("invalid backend list"))
        .count();
    assert_eq!(errors, 1, "{}", daemon.log());

    // The guard holds an empty answer the same way.
    write(d, "backends.json", "[]");
    wait_for("the guard", Duration::from_secs(10), &daemon, || {
        daemon.log().contains("guard held")
    });
    assert_eq!(read(d, "upstream.conf"), good);

    write(d, "backends.json", &backends(&["127.0.0.2"]));
    wait_for("recovery", Duration::from_secs(15), &daemon, || {
        read(d, "upstream.conf").contains("127.0.0.2:8080")
    });
    assert_eq!(daemon.stop(), 0);
}

#[test]
fn nothing_is_rendered_before_the_first_good_answer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "config.yaml",
        &config("1s", "settle_min: 1s, settle_max: 2s", COUNT_RELOAD),
    );
    write(d, "upstream.conf", "# the frontend's current config\n");
    let daemon = Daemon::start(d);
    wait_for(
        "the missing file to be reported",
        Duration::from_secs(10),
        &daemon,
        || daemon.log().contains("backends.json"),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        read(d, "upstream.conf"),
        "# the frontend's current config\n"
    );
    assert_eq!(reloads(d), 0);
    write(d, "backends.json", &backends(&["127.0.0.1"]));
    wait_for(
        "the first good answer",
        Duration::from_secs(15),
        &daemon,
        || read(d, "upstream.conf").contains("127.0.0.1:8080"),
    );
    assert_eq!(daemon.stop(), 0);
}

#[test]
fn sighup_with_a_bad_config_keeps_running_and_a_good_one_is_swapped_in() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good_config = config("1s", "settle_min: 1s, settle_max: 2s", COUNT_RELOAD);
    write(d, "config.yaml", &good_config);
    write(d, "backends.json", &backends(&["127.0.0.1"]));
    let daemon = Daemon::start(d);
    wait_for("first apply", Duration::from_secs(10), &daemon, || {
        reloads(d) == 1
    });

    write(
        d,
        "config.yaml",
        "services: { web: { locators: [nope: {}] } }\n",
    );
    daemon.signal(Signal::SIGHUP);
    wait_for("the rejection", Duration::from_secs(10), &daemon, || {
        daemon.log().contains("still running the old one")
    });
    assert!(daemon.log().contains("config.yaml:1:"), "{}", daemon.log());
    // Still working with the old config.
    write(d, "backends.json", &backends(&["127.0.0.1", "127.0.0.2"]));
    wait_for(
        "convergence on the old config",
        Duration::from_secs(10),
        &daemon,
        || read(d, "upstream.conf").contains("127.0.0.2:8080"),
    );

    // A good new config: a new upstream name, same service, so its last good set is kept.
    write(
        d,
        "config.yaml",
        &good_config.replace(
            "vars: { service: web }",
            "vars: { service: web, upstream: pool }",
        ),
    );
    daemon.signal(Signal::SIGHUP);
    wait_for(
        "the new config to apply",
        Duration::from_secs(10),
        &daemon,
        || read(d, "upstream.conf").contains("upstream pool {"),
    );
    assert!(read(d, "upstream.conf").contains("127.0.0.2:8080"));
    assert_eq!(daemon.stop(), 0);
}

#[test]
fn sigusr1_refreshes_now_and_sigterm_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Refresh hourly: only the start-up locate and SIGUSR1 can see a change.
    write(
        d,
        "config.yaml",
        &config("1h", "settle_min: 1s, settle_max: 2s", COUNT_RELOAD),
    );
    write(d, "backends.json", &backends(&["127.0.0.1"]));
    let daemon = Daemon::start(d);
    wait_for("first apply", Duration::from_secs(10), &daemon, || {
        reloads(d) == 1
    });
    write(d, "backends.json", &backends(&["127.0.0.9"]));
    std::thread::sleep(Duration::from_secs(2));
    assert!(!read(d, "upstream.conf").contains("127.0.0.9"));
    daemon.signal(Signal::SIGUSR1);
    wait_for(
        "the SIGUSR1 refresh",
        Duration::from_secs(10),
        &daemon,
        || read(d, "upstream.conf").contains("127.0.0.9:8080"),
    );
    let started = Instant::now();
    assert_eq!(daemon.stop(), 0);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_bad_config_at_start_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "config.yaml", "services: {}\noutputs: 3\n");
    let out = Command::new(env!("CARGO_BIN_EXE_elasticd"))
        .args(["run", "--config", "config.yaml"])
        .current_dir(d)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
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
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The checker rejects any file that mentions 127.0.0.2.
    let cfg = config("1s", "settle_min: 1s, settle_max: 2s", COUNT_RELOAD).replace(
        "  fe:\n",
        "  fe:\n    check: [sh, -c, \"! grep -q 127.0.0.2 upstream.conf\"]\n",
    );
    write(d, "config.yaml", &cfg);
    write(d, "backends.json", &backends(&["127.0.0.1"]));
    let daemon = Daemon::start(d);
    wait_for("first apply", Duration::from_secs(10), &daemon, || {
        reloads(d) == 1
    });
    write(d, "backends.json", &backends(&["127.0.0.1", "127.0.0.2"]));
    wait_for("the failed check", Duration::from_secs(10), &daemon, || {
        daemon.log().contains("check failed")
    });
    // Back to what is on disk: nothing left to do, so no retries and no busy loop.
    write(d, "backends.json", &backends(&["127.0.0.1"]));
    std::thread::sleep(Duration::from_secs(4));
    let pid = daemon.child.as_ref().unwrap().id();
    let before = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_seconds(pid) - before;
    assert!(used < 0.5, "daemon used {used}s of CPU in 3s while idle");
    assert_eq!(reloads(d), 1);
    assert_eq!(daemon.stop(), 0);
}

#[test]
fn sighup_during_a_slow_locate_asks_again_with_the_new_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "plugin.sh",
        "#!/bin/sh\nsleep \"$(cat delay)\"\necho '[{\"targets\": [\"127.0.0.1:81\"]}]'\n",
    );
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(d.join("plugin.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    }
    write(d, "delay", "0");
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
    write(d, "config.yaml", &cfg("30s"));
    let daemon = Daemon::start(d);
    wait_for("first apply", Duration::from_secs(10), &daemon, || {
        read(d, "upstream.conf").contains("127.0.0.1:81")
    });
    // A slow locate is running when the service's config changes.
    write(d, "delay", "3");
    daemon.signal(Signal::SIGUSR1);
    std::thread::sleep(Duration::from_millis(500));
    write(d, "delay", "0");
    write(
        d,
        "config.yaml",
        &cfg("20s").replace(
            "vars: { service: web }",
            "vars: { service: web, upstream: pool }",
        ),
    );
    daemon.signal(Signal::SIGHUP);
    // Without asking again, the next answer would come an hour later.
    wait_for(
        "the new config's answer",
        Duration::from_secs(10),
        &daemon,
        || read(d, "upstream.conf").contains("upstream pool {"),
    );
    assert_eq!(daemon.stop(), 0);
}

#[test]
fn a_failing_on_change_hook_is_retried_with_backoff_until_it_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("plugins/actions")).unwrap();
    fs::write(
        d.join("plugins/actions/hook"),
        "#!/bin/sh\ncat > last-request.json\n\
         if [ -e hook-fails ]; then echo 'chat API down' >&2; echo x >> failures; exit 1; fi\n\
         echo ok >> acks\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(
            d.join("plugins/actions/hook"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
    write(d, "hook-fails", "");
    write(d, "backends.json", &backends(&["127.0.0.1"]));
    write(
        d,
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
    let daemon = Daemon::start(d);
    // Retried with no new change to trigger it.
    wait_for(
        "two failed attempts",
        Duration::from_secs(15),
        &daemon,
        || read(d, "failures").lines().count() >= 2,
    );
    assert!(daemon.log().contains("chat API down"), "{}", daemon.log());
    fs::remove_file(d.join("hook-fails")).unwrap();
    wait_for(
        "the hook to succeed",
        Duration::from_secs(15),
        &daemon,
        || read(d, "acks").lines().count() == 1,
    );
    let request: serde_json::Value = serde_json::from_str(&read(d, "last-request.json")).unwrap();
    assert_eq!(request["changes"][0]["added"][0]["address"], "127.0.0.1");
    write(d, "backends.json", &backends(&["127.0.0.2"]));
    wait_for("the next change", Duration::from_secs(15), &daemon, || {
        read(d, "acks").lines().count() == 2
    });
    let request: serde_json::Value = serde_json::from_str(&read(d, "last-request.json")).unwrap();
    assert_eq!(request["changes"][0]["added"][0]["address"], "127.0.0.2");
    assert_eq!(request["changes"][0]["removed"][0]["address"], "127.0.0.1");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        read(d, "acks").lines().count(),
        2,
        "acknowledged changes are not repeated"
    );
    assert_eq!(daemon.stop(), 0);
}
