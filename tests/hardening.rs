//! The `elasticd` binary against hostile values and hostile surroundings (issue 16, items 8-10):
//! tags that HAProxy would evaluate, values that would forge log lines, symlinked outputs,
//! staging files of killed runs, reloads that leave a child behind, inherited file descriptors
//! and overlapping renders. Each test runs the real binary in a temp dir; every process it starts
//! is killed when the test ends, pass or fail; everything it talks to is on loopback.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

mod support;

use support::{Group, PidFile, Test, free_port, program, write_file};

/// How long a one-shot run may take before it is killed and the test fails.
const LIMIT: Duration = Duration::from_secs(60);

/// `elasticd render --config config.yaml` in the background, logging to `render.log`.
fn start_render(t: &Test) -> Group {
    Group::spawn(
        "elasticd render",
        t.render().command(),
        &t.join("render.log"),
    )
}

// ---------------------------------------------------------------------------------------------
// Item 8: values that HAProxy would evaluate.

/// The `X-Zone` header of a response from `haproxy` on `127.0.0.1:port`, once it listens.
fn x_zone(haproxy: &mut Group, port: u16) -> String {
    let mut stream = None;
    haproxy.wait_for_log(
        &format!("haproxy to listen on {port}"),
        Duration::from_secs(10),
        |_| {
            stream = TcpStream::connect(("127.0.0.1", port)).ok();
            stream.is_some()
        },
    );
    let mut stream = stream.expect("connected");
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .lines()
        .find_map(|l| l.strip_prefix("x-zone: ").or(l.strip_prefix("X-Zone: ")))
        .map(|value| value.trim().to_string())
        .unwrap_or_else(|| panic!("no X-Zone header in {response:?}"))
}

#[test]
fn a_tag_is_never_an_haproxy_sample_expression() {
    let port = free_port();
    let t = Test::new()
        .file(
            "templates/haproxy.cfg.tera",
            "defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n\
             frontend fe\n    bind 127.0.0.1:{{ vars.port }}\n\
             {%- for b in backends %}\n    http-request return status 200 content-type text/plain hdr X-Zone \"{{ b.zone }}\" string ok\n{%- endfor %}\n",
        )
        .config(&format!(
            "services:\n  web:\n    locators:\n      - file: {{ path: backends.json }}\n\
             outputs:\n  - {{ template: templates/haproxy.cfg.tera, path: haproxy.cfg, vars: {{ service: web, port: {port} }} }}\n"
        ))
        .file(
            "backends.json",
            r#"[{"address": "127.0.0.1", "port": 80, "zone": "%[src]"}]"#,
        );
    let run = t.render().run_within(LIMIT);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let cfg = t.read("haproxy.cfg");
    let mut haproxy = Command::new(program("haproxy", "haproxy"));
    haproxy.args(["-f", "haproxy.cfg"]).current_dir(t.path());
    let mut haproxy = Group::spawn("haproxy", haproxy, &t.join("haproxy.log"));
    // Before the fix HAProxy answered with the client's address here.
    assert_eq!(x_zone(&mut haproxy, port), "_[src]", "{cfg}");
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

fn forging_config() -> Test {
    Test::new()
        .config(
            "services:\n  web:\n    refresh: 1h\n    locators:\n      - file: { path: backends.json }\n\
             outputs:\n  - { template: \"builtin:nginx\", path: upstream.conf, vars: { service: web } }\n",
        )
        .file("backends.json", FORGED)
}

#[test]
fn locate_and_render_errors_cannot_forge_lines() {
    let t = forging_config();
    let run = t
        .elasticd(["locate", "--config", "config.yaml"])
        .run_within(LIMIT);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.starts_with("error: service `web`"),
        "{}",
        run.stderr
    );
    assert_not_forged(&run.stderr);
    let run = t.render().run_within(LIMIT);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_not_forged(&run.stderr);
}

#[test]
fn the_daemon_log_cannot_be_forged() {
    let t = forging_config();
    // `elasticd run` prints nothing on stdout, so `daemon.log` holds just its stderr.
    let mut daemon = t.elasticd(["run", "--config", "config.yaml"]).daemon();
    daemon.wait_for_log("the locate error", Duration::from_secs(20), |log| {
        log.contains("RED")
    });
    // Stopped within 10 s, however it exits.
    daemon.signal(Signal::SIGTERM);
    daemon.wait_exit("the daemon to stop", Duration::from_secs(10));
    assert_not_forged(&daemon.log());
}

// ---------------------------------------------------------------------------------------------
// Item 10.

/// One service from `backends.json`, one nginx output `upstream.conf` for frontend `fe`, whose
/// check and reload are `check` and `reload` (YAML flow lists).
fn fe_config(check: &str, reload: &str) -> Test {
    Test::new()
        .config(&format!(
            "state_file: state.json\n\
             services:\n  web:\n    port: 8080\n    locators:\n      - file: {{ path: backends.json }}\n\
             frontends:\n  fe:\n    check: {check}\n    check_timeout: 20s\n    reload: {{ command: {reload}, timeout: 3s }}\n\
             outputs:\n  - {{ template: \"builtin:nginx\", path: upstream.conf, frontend: fe, vars: {{ service: web }} }}\n"
        ))
        .file("backends.json", r#"[{"targets": ["10.0.0.1"]}]"#)
}

const RELOAD: &str = r#"[sh, -c, "echo reload >> reloads"]"#;

#[test]
fn a_symlinked_output_is_refused_and_its_target_never_copied() {
    let t = fe_config("[true]", RELOAD);
    write_file(&t.join("secret"), "SECRET KEY\n", 0o600);
    std::os::unix::fs::symlink(t.join("secret"), t.join("upstream.conf")).unwrap();
    for extra in [&["--dry-run"][..], &[]] {
        let run = t.render().args(extra).run_within(LIMIT);
        assert_eq!(run.code, 1, "{extra:?}: {}", run.stderr);
        assert!(!run.stdout.contains("SECRET"), "{extra:?}: {}", run.stdout);
        let want = format!(
            "cannot replace {}: it is a symbolic link to `{}`",
            t.join("upstream.conf").display(),
            t.join("secret").display()
        );
        assert!(run.stderr.contains(&want), "{extra:?}: {}", run.stderr);
    }
    assert!(
        fs::symlink_metadata(t.join("upstream.conf"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(t.read("secret"), "SECRET KEY\n");
    assert!(!t.exists("upstream.conf.bak"));
    assert_eq!(t.read("reloads"), "");
}

fn staging_files(t: &Test) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(t.path())
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
    // The check stalls while `slow` exists, so the run can be killed mid-check.
    let check = r#"[sh, -c, "if [ -e slow ]; then echo $$ > check.pid; sleep 30; fi", "{staged}"]"#;
    let t = fe_config(check, RELOAD).file("slow", "");
    let _check = PidFile::new(t.join("check.pid"));
    let mut killed = start_render(&t);
    killed.wait_for_log("the check", Duration::from_secs(20), |_| {
        t.exists("check.pid")
    });
    killed.stop_with(Signal::SIGKILL, Duration::from_secs(10));
    let stale = staging_files(&t);
    assert_eq!(stale.len(), 1, "{stale:?}");
    assert!(stale[0].starts_with(".upstream.conf.elasticd-") && stale[0].ends_with(".conf"));

    fs::remove_file(t.join("slow")).unwrap();
    let run = t.render().run_within(LIMIT);
    run.exited_saying(0, "left by a run that was killed");
    assert_eq!(staging_files(&t), Vec::<String>::new());
    assert!(t.read("upstream.conf").contains("10.0.0.1:8080"));
    assert_eq!(t.read("reloads"), "reload\n");
}

#[test]
fn a_reload_that_exits_0_is_done_even_if_a_child_holds_its_stdout() {
    // Like a reload command that starts a daemon without detaching its output.
    let reload = r#"[sh, -c, "sleep 30 & echo $! > child.pid; echo reload >> reloads"]"#;
    let t = fe_config("[true]", reload);
    let _child = PidFile::new(t.join("child.pid"));
    let started = Instant::now();
    // `run`, not `run_within`: elasticd's stdout and stderr are pipes that the test reads to
    // EOF, so a child that got them from elasticd would hold this up as well.
    let run = t.render().run();
    run.exited_saying(0, "reloaded");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(t.read("reloads"), "reload\n");
}

#[test]
fn plugins_and_commands_get_only_stdin_stdout_and_stderr() {
    // The check fails naming any descriptor above 2 it has. No redirections: the shell would
    // save a descriptor of its own for them. `-e` drops the one the glob had open.
    let check = r#"[sh, -c, "for f in /proc/$$/fd/*; do [ -e $f ] && case ${f##*/} in 0|1|2) ;; *) echo leaked ${f##*/}; exit 1;; esac; done; exit 0"]"#;
    let t = fe_config(check, RELOAD);
    // elasticd itself inherits descriptor 7 without close-on-exec, as from a parent that leaks.
    let run = t.render().inherit_fd(7, "config.yaml").run_within(LIMIT);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("leaked"), "{}", run.stderr);
    assert_eq!(t.read("reloads"), "reload\n");
}

#[test]
fn overlapping_renders_of_one_config_do_not_run_at_once() {
    let check = r#"[sh, -c, "if [ -e slow ]; then echo $$ > check.pid; sleep 5; fi"]"#;
    let t = fe_config(check, RELOAD).file("slow", "");
    let _check = PidFile::new(t.join("check.pid"));
    let mut first = start_render(&t);
    first.wait_for_log("the first run's check", Duration::from_secs(20), |_| {
        t.exists("check.pid")
    });
    // Through another path to the same file: the lock is the file's, not the name's.
    let run = t
        .elasticd(["render", "--config", "./config.yaml"])
        .run_within(LIMIT);
    run.exited_saying(1, "another `elasticd render` holds the lock on");
    // A dry run writes nothing and takes no lock.
    assert_eq!(t.render().arg("--dry-run").run_within(LIMIT).code, 0);
    let code = first.wait_exit("the first run to finish", Duration::from_secs(20));
    assert_eq!(code, 0, "{}", first.log());
    assert_eq!(t.read("reloads"), "reload\n");
    fs::remove_file(t.join("slow")).unwrap();
    let run = t.render().run_within(LIMIT);
    assert_eq!(run.code, 0, "{}", run.stderr);
}
