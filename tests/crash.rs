//! Runs killed at the worst moment: between installing a file and reloading its frontend. The next
//! run must not take the file on disk as applied: it checks it again and reloads, or restores the
//! previous file when the check fails.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

mod support;

use support::{Cmd, Output};

fn elasticd(dir: &Path, args: &[&str]) -> Output {
    Cmd::new(dir).args(args).run()
}

fn read(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name)).unwrap_or_default()
}

fn reloads(dir: &Path) -> usize {
    read(dir, "reloads").lines().count()
}

fn backends(dir: &Path, ip: &str) {
    fs::write(
        dir.join("backends.json"),
        format!("[{{\"targets\": [\"{ip}:80\"]}}]"),
    )
    .unwrap();
}

/// The check hangs while `hang` exists (recording its process group in `check.pid`), and fails
/// while `fail` exists.
fn setup(staged: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let file_arg = if staged { r#", "{staged}""# } else { "" };
    fs::write(
        dir.path().join("config.yaml"),
        format!(
            r#"services:
  web:
    locators: [file: {{ path: backends.json }}]
frontends:
  fe:
    check: [sh, -c, 'if [ -f hang ]; then echo $$ > check.pid; sleep 60; fi; test ! -f fail', check{file_arg}]
    reload: {{ command: [sh, -c, "echo reload >> reloads"] }}
outputs:
  - {{ template: "builtin:nginx", path: upstream.conf, frontend: fe, vars: {{ service: web }} }}
"#
        ),
    )
    .unwrap();
    backends(dir.path(), "127.0.0.1");
    elasticd(dir.path(), &["render"]).success();
    assert_eq!(reloads(dir.path()), 1);
    dir
}

/// Kills the process group a hanging check wrote to `check.pid`, even if the test fails.
struct CheckGroup<'a>(&'a Path);

impl Drop for CheckGroup<'_> {
    fn drop(&mut self) {
        if let Ok(pid) = read(self.0, "check.pid").trim().parse::<i32>() {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Starts a render whose check hangs, and SIGKILLs it once the check runs.
fn render_killed_during_the_check(dir: &Path) {
    fs::write(dir.join("hang"), "").unwrap();
    let mut child = Cmd::new(dir)
        .command()
        .args(["render"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Declared after the child so that it is dropped first if an assertion fails.
    let group = CheckGroup(dir);
    let started = Instant::now();
    while !dir.join("check.pid").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the check never ran"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(group);
    fs::remove_file(dir.join("hang")).unwrap();
}

#[test]
fn a_file_installed_by_a_killed_run_is_checked_again_and_its_reload_delivered() {
    let dir = setup(false);
    backends(dir.path(), "127.0.0.2");
    render_killed_during_the_check(dir.path());
    // The new file is in place, unchecked, and the frontend was never reloaded.
    assert!(read(dir.path(), "upstream.conf").contains("127.0.0.2:80"));
    assert_eq!(reloads(dir.path()), 1);
    let next = elasticd(dir.path(), &["render"]);
    let stderr = next.stderr.as_str();
    assert!((next.code == 0), "{stderr}");
    assert!(
        stderr.contains("did not finish; the check passes"),
        "{stderr}"
    );
    assert_eq!(reloads(dir.path()), 2, "the owed reload was not delivered");
    // Delivered once: a third run has nothing to do.
    let again = elasticd(dir.path(), &["render"]);
    assert!((again.code == 0));
    assert_eq!(reloads(dir.path()), 2);
}

/// The next render installs the second set (127.0.0.2) and reloads for it.
fn assert_second_set_reloaded(dir: &Path) {
    elasticd(dir, &["render"]).success();
    assert!(read(dir, "upstream.conf").contains("127.0.0.2:80"));
    assert_eq!(reloads(dir), 2);
}

#[test]
fn a_file_installed_by_a_killed_run_that_fails_its_check_is_rolled_back() {
    let dir = setup(false);
    backends(dir.path(), "127.0.0.2");
    render_killed_during_the_check(dir.path());
    fs::write(dir.path().join("fail"), "").unwrap();
    let next = elasticd(dir.path(), &["render"]);
    let stderr = next.stderr.as_str();
    assert_eq!(Some(next.code), Some(1), "{stderr}");
    assert!(stderr.contains("the check fails: restoring"), "{stderr}");
    let file = read(dir.path(), "upstream.conf");
    assert!(
        file.contains("127.0.0.1:80") && !file.contains("127.0.0.2"),
        "{file}"
    );
    assert_eq!(reloads(dir.path()), 1);
    // Once the check passes again, the new set goes in and is reloaded.
    fs::remove_file(dir.path().join("fail")).unwrap();
    assert_second_set_reloaded(dir.path());
}

#[test]
fn a_staged_check_killed_leaves_the_old_file_and_nothing_owed() {
    let dir = setup(true);
    let before = read(dir.path(), "upstream.conf");
    backends(dir.path(), "127.0.0.2");
    render_killed_during_the_check(dir.path());
    // With {staged}, nothing was installed before the check: the old file is still there.
    assert_eq!(read(dir.path(), "upstream.conf"), before);
    assert_second_set_reloaded(dir.path());
}

#[test]
fn a_failed_reload_is_owed_to_the_next_run_even_without_a_state_file() {
    let dir = setup(false);
    let config = read(dir.path(), "config.yaml").replace(
        r#"reload: { command: [sh, -c, "echo reload >> reloads"] }"#,
        r#"reload: { command: [sh, -c, "echo reload >> reloads; test ! -f reload-fails"] }"#,
    );
    fs::write(dir.path().join("config.yaml"), config).unwrap();
    fs::write(dir.path().join("reload-fails"), "").unwrap();
    backends(dir.path(), "127.0.0.2");
    let failed = elasticd(dir.path(), &["render"]);
    assert_eq!(Some(failed.code), Some(1));
    assert_eq!(reloads(dir.path()), 2);
    fs::remove_file(dir.path().join("reload-fails")).unwrap();
    elasticd(dir.path(), &["render"]).success();
    assert_eq!(reloads(dir.path()), 3, "the failed reload was not retried");
}

/// Waits for `child` up to `limit`; kills it (and fails) when it takes longer.
fn wait_or_kill(mut child: std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_state_file_that_blocks_does_not_hold_the_run() {
    let dir = setup(false);
    let config = read(dir.path(), "config.yaml");
    fs::write(
        dir.path().join("config.yaml"),
        format!("state_file: state.fifo\n{config}"),
    )
    .unwrap();
    let made = Command::new("mkfifo")
        .arg(dir.path().join("state.fifo"))
        .status()
        .unwrap();
    assert!(made.success());
    let child = Cmd::new(dir.path())
        .command()
        .args(["render", "--no-reload"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_or_kill(child, Duration::from_secs(30));
    // The state can't be read (or saved over a FIFO), which is an error; but the run ends.
    assert!(status.code().is_some(), "{status:?}");
}

#[test]
fn signals_right_after_start_are_handled_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    // Enough services that loading takes a while: the signals arrive while it does.
    let mut config = String::from("daemon: { settle_min: 1s }\nservices:\n");
    for i in 0..3000 {
        config.push_str(&format!(
            "  s{i}:\n    refresh: 1h\n    locators: [static: [\"127.0.0.1:{}\"]]\n",
            1000 + i
        ));
    }
    config.push_str("outputs: []\n");
    fs::write(dir.path().join("config.yaml"), config).unwrap();
    let mut child = Cmd::new(dir.path())
        .command()
        .args(["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let started = Instant::now();
    // Send as soon as elasticd's main has held or caught SIGHUP, or 20 ms after the exec at the
    // latest: loading this config takes far longer than that, so without the handlers in place
    // first the signals would arrive mid-load and end the process.
    let mask = |field: &str| {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    const SIGHUP_BIT: u64 = 1;
    while fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default() != "elasticd\n" {
        assert!(started.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_micros(200));
    }
    let execed = Instant::now();
    while (mask("SigBlk:") | mask("SigCgt:")) & SIGHUP_BIT == 0
        && execed.elapsed() < Duration::from_millis(20)
    {
        std::thread::sleep(Duration::from_micros(200));
    }
    let raw = Pid::from_raw(child.id() as i32);
    for signal in [
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGHUP,
        Signal::SIGUSR1,
    ] {
        let _ = kill(raw, signal);
    }
    std::thread::sleep(Duration::from_millis(500));
    let alive = child.try_wait().unwrap();
    let _ = kill(raw, Signal::SIGTERM);
    let status = wait_or_kill(child, Duration::from_secs(30));
    assert_eq!(alive, None, "a signal during start-up ended the daemon");
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_file_locator_on_a_fifo_is_an_error_and_the_run_ends() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("config.yaml"),
        "services:\n  web:\n    timeout: 2s\n    locators: [file: { path: backends.json }]\noutputs: []\n",
    )
    .unwrap();
    let made = Command::new("mkfifo")
        .arg(dir.path().join("backends.json"))
        .status()
        .unwrap();
    assert!(made.success());
    let child = Cmd::new(dir.path())
        .command()
        .args(["locate"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let out = {
        let status = wait_or_kill(child, Duration::from_secs(30));
        assert_eq!(status.code(), Some(1), "{status:?}");
        started.elapsed()
    };
    assert!(out < Duration::from_secs(30));
}

/// The scripts of the simulated frontend: `check` passes a file unless it names the poisoned
/// backend 127.0.0.99, and logs what it passed only while elasticd (its parent) still lives to act
/// on it; `reload` logs the file the frontend now runs. Both register in `running/` while they run.
fn soak_config(dir: &Path, staged: bool) {
    let script = |name: &str, body: &str| {
        let path = dir.join(name);
        fs::write(
            &path,
            format!(
                "#!/bin/sh\nmkdir -p running; echo > running/$$\ntrap 'rm -f running/$$' EXIT\n{body}\n"
            ),
        )
        .unwrap();
        let made = Command::new("chmod").arg("+x").arg(&path).status().unwrap();
        assert!(made.success());
    };
    script(
        "check.sh",
        "f=${1:-upstream.conf}\nsleep 0.02\nif grep -q 127.0.0.99 \"$f\"; then exit 1; fi\n\
         if kill -0 $PPID 2>/dev/null; then sha256sum < \"$f\" >> checked.log; fi",
    );
    script(
        "reload.sh",
        "sleep 0.01\nsha256sum < upstream.conf >> reloads.log",
    );
    let check = if staged {
        r#"[./check.sh, "{staged}"]"#
    } else {
        "[./check.sh]"
    };
    fs::write(
        dir.join("config.yaml"),
        format!(
            r#"state_file: state.json
daemon: {{ settle_min: 200ms, settle_max: 200ms }}
services:
  web:
    refresh: 1s
    guard: {{ min_backends: 1 }}
    locators: [file: {{ path: backends.json }}]
frontends:
  fe:
    check: {check}
    reload: {{ command: [./reload.sh] }}
outputs:
  - {{ template: "builtin:nginx", path: upstream.conf, frontend: fe, vars: {{ service: web }} }}
"#
        ),
    )
    .unwrap();
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg("sha256sum < \"$0\"")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits until no check or reload script of an earlier run is still running. A script registers
/// as `running/PID`; one that was killed before its trap ran counts as done once its process is
/// gone.
fn quiesce(dir: &Path) {
    let started = Instant::now();
    loop {
        let busy = fs::read_dir(dir.join("running"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| Path::new("/proc").join(e.file_name()).exists())
                    .count()
            })
            .unwrap_or(0);
        if busy == 0 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "scripts still running"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn killed_anywhere_the_next_run_leaves_a_checked_file_and_the_reload_it_owed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = fastrand::Rng::with_seed(20261201);
    let mut kills = 0;
    for round in 0..200 {
        let staged = round % 4 == 3;
        soak_config(d, staged);
        // A new set for every round; one in five holds the backend the check refuses.
        let mut ips: Vec<String> = (0..rng.usize(1..4))
            .map(|_| format!("127.0.0.{}", rng.u8(1..60)))
            .collect();
        if rng.usize(0..5) == 0 {
            ips.push("127.0.0.99".into());
        }
        let targets: Vec<String> = ips.iter().map(|ip| format!("\"{ip}:80\"")).collect();
        fs::write(
            d.join("backends.json"),
            format!("[{{\"targets\": [{}]}}]", targets.join(", ")),
        )
        .unwrap();
        // Every fifth round kills the daemon instead of a render.
        let daemon = round % 5 == 4;
        let args: &[&str] = if daemon { &["run"] } else { &["render"] };
        let mut child = Cmd::new(d)
            .command()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // A render takes some 50-100 ms here; the daemon applies after its 200ms settle window.
        let wait = if daemon {
            rng.u64(150..400)
        } else {
            rng.u64(0..120)
        };
        std::thread::sleep(Duration::from_millis(wait));
        if child.try_wait().unwrap().is_none() {
            kills += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        quiesce(d);

        let next = elasticd(d, &["render"]);
        quiesce(d);
        let stderr = next.stderr.as_str();
        let poisoned = ips.iter().any(|ip| ip == "127.0.0.99");
        let file = d.join("upstream.conf");
        let text = read(d, "upstream.conf");
        let on_disk = sha256(&file);
        if poisoned {
            assert_eq!(Some(next.code), Some(1), "round {round}: {stderr}");
            assert!(!text.contains("127.0.0.99"), "round {round}: {text}");
        } else {
            assert!((next.code == 0), "round {round}: {stderr}");
            for ip in &ips {
                assert!(text.contains(&format!("{ip}:80")), "round {round}: {text}");
            }
        }
        if !text.is_empty() {
            let checked = read(d, "checked.log");
            assert!(
                checked.lines().any(|l| l.trim() == on_disk),
                "round {round}: the file on disk never passed its check\n{text}"
            );
            let reloads = read(d, "reloads.log");
            assert_eq!(
                reloads.lines().last().map(str::trim),
                Some(on_disk.as_str()),
                "round {round}: the frontend does not run the file on disk\n{stderr}"
            );
        }
    }
    // Most rounds must really have been cut short, or the test proves little.
    assert!(kills > 100, "only {kills} of 200 runs were killed mid-way");
}
