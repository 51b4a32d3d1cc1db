//! The `elasticd` binary against hostile values and hostile surroundings (issue 16, items 8-10):
//! tags that HAProxy would evaluate, values that would forge log lines, symlinked outputs,
//! staging files of killed runs, reloads that leave a child behind, inherited file descriptors
//! and overlapping renders. Self-contained: temp dirs, processes stopped on drop, loopback only.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_elasticd");

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn finished(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(dir)
        .env_remove("ELASTICD_CONFIG")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    cmd
}

fn elasticd(dir: &Path, args: &[&str]) -> Run {
    finished(command(dir, args).output().expect("run elasticd"))
}

fn render(dir: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["render", "--config", "config.yaml"];
    args.extend_from_slice(extra);
    elasticd(dir, &args)
}

fn write(dir: &Path, name: &str, text: &str) {
    fs::write(dir.join(name), text).unwrap();
}

fn read(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name)).unwrap_or_default()
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child in its own process group; the whole group is killed on drop.
struct Group(Child);

impl Group {
    fn spawn(cmd: &mut Command) -> Group {
        Group(cmd.process_group(0).spawn().expect("spawn"))
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.0.id() as i32)
    }

    /// Sends SIGTERM and waits (up to 10 s) for the exit.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let _ = kill(self.pid(), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(-(self.0.id() as i32)), Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// Kills the process (and its group, if it leads one) whose pid a test's child wrote to `file`.
struct PidFile(PathBuf);

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Some(pid) = fs::read_to_string(&self.0)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Item 8: values that HAProxy would evaluate.

/// The haproxy binary (Debian puts it in /usr/sbin, which a user's PATH may lack).
fn haproxy_program() -> PathBuf {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join("haproxy"))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .expect("haproxy is not installed: install the Debian package haproxy")
}

/// The `X-Zone` header of a response from `127.0.0.1:port`, retried until HAProxy listens.
fn x_zone(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
            let mut response = String::new();
            let _ = stream.read_to_string(&mut response);
            if let Some(value) = response
                .lines()
                .find_map(|l| l.strip_prefix("x-zone: ").or(l.strip_prefix("X-Zone: ")))
            {
                return value.trim().to_string();
            }
            panic!("no X-Zone header in {response:?}");
        }
        assert!(
            Instant::now() < deadline,
            "haproxy does not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_tag_is_never_an_haproxy_sample_expression() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    fs::create_dir(d.join("templates")).unwrap();
    write(
        d,
        "templates/haproxy.cfg.tera",
        "defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n\
         frontend fe\n    bind 127.0.0.1:{{ vars.port }}\n\
         {%- for b in backends %}\n    http-request return status 200 content-type text/plain hdr X-Zone \"{{ b.zone }}\" string ok\n{%- endfor %}\n",
    );
    write(
        d,
        "config.yaml",
        &format!(
            "services:\n  web:\n    locators:\n      - file: {{ path: backends.json }}\n\
             outputs:\n  - {{ template: templates/haproxy.cfg.tera, path: haproxy.cfg, vars: {{ service: web, port: {port} }} }}\n"
        ),
    );
    write(
        d,
        "backends.json",
        r#"[{"address": "127.0.0.1", "port": 80, "zone": "%[src]"}]"#,
    );
    let run = render(d, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let cfg = read(d, "haproxy.cfg");
    let mut haproxy = Command::new(haproxy_program());
    haproxy
        .args(["-f", "haproxy.cfg"])
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _haproxy = Group::spawn(&mut haproxy);
    // Before the fix HAProxy answered with the client's address here.
    assert_eq!(x_zone(port), "_[src]", "{cfg}");
}

// ---------------------------------------------------------------------------------------------
// Item 9: values that would forge log lines.

const FORGED: &str =
    r#"[{"targets": ["10.0.0.1\n2026-01-01T00:00:00Z  INFO forged: all good\r\u001b[31mRED"]}]"#;

/// No raw `\r` or escape, and no line of `log` starts with the forged record.
fn assert_not_forged(log: &str) {
    assert!(!log.contains('\r') && !log.contains('\x1b'), "{log:?}");
    assert!(
        log.lines().all(|l| !l.starts_with("2026-01-01")),
        "a forged line:\n{log}"
    );
    assert!(
        log.contains("forged: all good"),
        "the value is gone:\n{log}"
    );
}

fn forging_config(d: &Path) {
    write(
        d,
        "config.yaml",
        "services:\n  web:\n    refresh: 1h\n    locators:\n      - file: { path: backends.json }\n\
         outputs:\n  - { template: \"builtin:nginx\", path: upstream.conf, vars: { service: web } }\n",
    );
    write(d, "backends.json", FORGED);
}

#[test]
fn locate_and_render_errors_cannot_forge_lines() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    forging_config(d);
    let run = elasticd(d, &["locate", "--config", "config.yaml"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.starts_with("error: service `web`"),
        "{}",
        run.stderr
    );
    assert_not_forged(&run.stderr);
    let run = render(d, &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_not_forged(&run.stderr);
}

#[test]
fn the_daemon_log_cannot_be_forged() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    forging_config(d);
    let log = fs::File::create(d.join("daemon.log")).unwrap();
    let mut daemon = Group::spawn(
        command(d, &["run", "--config", "config.yaml"])
            .stdout(Stdio::null())
            .stderr(log),
    );
    wait_for("the locate error", Duration::from_secs(20), || {
        read(d, "daemon.log").contains("RED")
    });
    assert!(daemon.stop().is_some(), "the daemon did not stop");
    assert_not_forged(&read(d, "daemon.log"));
}

// ---------------------------------------------------------------------------------------------
// Item 10.

/// One service from `backends.json`, one nginx output `upstream.conf` for frontend `fe`, whose
/// check and reload are `check` and `reload` (YAML flow lists).
fn fe_config(d: &Path, check: &str, reload: &str) {
    write(
        d,
        "config.yaml",
        &format!(
            "state_file: state.json\n\
             services:\n  web:\n    port: 8080\n    locators:\n      - file: {{ path: backends.json }}\n\
             frontends:\n  fe:\n    check: {check}\n    check_timeout: 20s\n    reload: {{ command: {reload}, timeout: 3s }}\n\
             outputs:\n  - {{ template: \"builtin:nginx\", path: upstream.conf, frontend: fe, vars: {{ service: web }} }}\n"
        ),
    );
    write(d, "backends.json", r#"[{"targets": ["10.0.0.1"]}]"#);
}

const RELOAD: &str = r#"[sh, -c, "echo reload >> reloads"]"#;

#[test]
fn a_symlinked_output_is_refused_and_its_target_never_copied() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fe_config(d, "[true]", RELOAD);
    write(d, "secret", "SECRET KEY\n");
    fs::set_permissions(d.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(d.join("secret"), d.join("upstream.conf")).unwrap();
    for extra in [&["--dry-run"][..], &[]] {
        let run = render(d, extra);
        assert_eq!(run.code, 1, "{extra:?}: {}", run.stderr);
        assert!(!run.stdout.contains("SECRET"), "{extra:?}: {}", run.stdout);
        let want = format!(
            "cannot replace {}: it is a symbolic link to `{}`",
            d.join("upstream.conf").display(),
            d.join("secret").display()
        );
        assert!(run.stderr.contains(&want), "{extra:?}: {}", run.stderr);
    }
    assert!(
        fs::symlink_metadata(d.join("upstream.conf"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(read(d, "secret"), "SECRET KEY\n");
    assert!(!d.join("upstream.conf.bak").exists());
    assert_eq!(read(d, "reloads"), "");
}

fn staging_files(d: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(d)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            n.contains(".elasticd-") && !n.ends_with(".elasticd-owed") && !n.ends_with("-lock")
        })
        .collect();
    names.sort();
    names
}

#[test]
fn staging_files_of_a_killed_run_are_removed_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The check stalls while `slow` exists, so the run can be killed mid-check.
    let check = r#"[sh, -c, "if [ -e slow ]; then echo $$ > check.pid; sleep 30; fi", "{staged}"]"#;
    fe_config(d, check, RELOAD);
    write(d, "slow", "");
    let _check = PidFile(d.join("check.pid"));
    let mut killed = Group::spawn(
        command(d, &["render", "--config", "config.yaml"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for("the check", Duration::from_secs(20), || {
        d.join("check.pid").exists()
    });
    let _ = kill(killed.pid(), Signal::SIGKILL);
    let _ = killed.0.wait();
    let stale = staging_files(d);
    assert_eq!(stale.len(), 1, "{stale:?}");
    assert!(stale[0].starts_with(".upstream.conf.elasticd-") && stale[0].ends_with(".conf"));

    fs::remove_file(d.join("slow")).unwrap();
    let run = render(d, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("left by a run that was killed"),
        "{}",
        run.stderr
    );
    assert_eq!(staging_files(d), Vec::<String>::new());
    assert!(read(d, "upstream.conf").contains("10.0.0.1:8080"));
    assert_eq!(read(d, "reloads"), "reload\n");
}

#[test]
fn a_reload_that_exits_0_is_done_even_if_a_child_holds_its_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Like a reload command that starts a daemon without detaching its output.
    let reload = r#"[sh, -c, "sleep 30 & echo $! > child.pid; echo reload >> reloads"]"#;
    fe_config(d, "[true]", reload);
    let _child = PidFile(d.join("child.pid"));
    let started = Instant::now();
    let run = render(d, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("reloaded"), "{}", run.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(read(d, "reloads"), "reload\n");
}

#[test]
fn plugins_and_commands_get_only_stdin_stdout_and_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The check fails naming any descriptor above 2 it has. No redirections: the shell would
    // save a descriptor of its own for them. `-e` drops the one the glob had open.
    let check = r#"[sh, -c, "for f in /proc/$$/fd/*; do [ -e $f ] && case ${f##*/} in 0|1|2) ;; *) echo leaked ${f##*/}; exit 1;; esac; done; exit 0"]"#;
    fe_config(d, check, RELOAD);
    // elasticd itself inherits descriptor 7 without close-on-exec, as from a parent that leaks.
    let out = Command::new("sh")
        .args([
            "-c",
            "exec 7<config.yaml; exec \"$0\" render --config config.yaml",
            BIN,
        ])
        .current_dir(d)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let run = finished(out);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("leaked"), "{}", run.stderr);
    assert_eq!(read(d, "reloads"), "reload\n");
}

#[test]
fn overlapping_renders_of_one_config_do_not_run_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let check = r#"[sh, -c, "if [ -e slow ]; then echo $$ > check.pid; sleep 5; fi"]"#;
    fe_config(d, check, RELOAD);
    write(d, "slow", "");
    let _check = PidFile(d.join("check.pid"));
    let mut first = Group::spawn(
        command(d, &["render", "--config", "config.yaml"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for("the first run's check", Duration::from_secs(20), || {
        d.join("check.pid").exists()
    });
    // Through another path to the same file: the lock is the file's, not the name's.
    let run = elasticd(d, &["render", "--config", "./config.yaml"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("another `elasticd render` holds the lock on"),
        "{}",
        run.stderr
    );
    // A dry run writes nothing and takes no lock.
    assert_eq!(render(d, &["--dry-run"]).code, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = first.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the first run did not finish");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    assert_eq!(read(d, "reloads"), "reload\n");
    fs::remove_file(d.join("slow")).unwrap();
    let run = render(d, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
}
