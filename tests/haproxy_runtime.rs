//! The `haproxy_runtime` reload action against a real master-worker HAProxy on loopback.
//!
//! Each test starts `haproxy -W -S master.sock -f main.cfg -f web.cfg` in its own temp dir
//! (its own process group, killed on drop), HTTP backends on distinct 127.0.0.x addresses that
//! answer with their own address, and drives `elasticd render` with a `file` locator. It checks
//! what a client gets through HAProxy, whether the worker was replaced (a reload) or not, and
//! that the file on disk says what HAProxy runs (`show servers state`).

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::{Group, Test, free_port, http_get, program, wait_until};

/// The haproxy binary; fails the test (naming the package) when it is not installed.
fn haproxy_program() -> String {
    program("haproxy", "haproxy")
}

/// An HTTP server on `127.0.0.<host>` that answers every request with its `address:port`.
/// Its threads end with the test process.
fn http_backend(host: u8) -> String {
    let listener = TcpListener::bind((Ipv4Addr::new(127, 0, 0, host), 0)).unwrap();
    let identity = listener.local_addr().unwrap().to_string();
    let answer = identity.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let answer = answer.clone();
            std::thread::spawn(move || serve(stream, &answer));
        }
    });
    identity
}

fn serve(mut stream: TcpStream, answer: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    // Health checks connect and close without a request.
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
}

/// One request through HAProxy: the body of a 200, or the status line (or error).
fn get(port: u16) -> String {
    http_get(port).unwrap_or_else(|e| e)
}

/// Waits until a round of requests reaches exactly `expected` (health checks need a moment).
fn wait_for_backends(port: u16, expected: &[&String]) {
    let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = BTreeSet::new();
    while Instant::now() < deadline {
        seen = (0..expected.len() * 4 + 4).map(|_| get(port)).collect();
        if seen == expected {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("requests reached {seen:?}, expected {expected:?}");
}

/// Sends one command to an HAProxy CLI socket and returns the answer.
fn cli(socket: &Path, command: &str) -> String {
    try_cli(socket, command).unwrap_or_else(|e| panic!("{}: `{command}`: {e}", socket.display()))
}

fn try_cli(socket: &Path, command: &str) -> std::io::Result<String> {
    let mut stream = UnixStream::connect(socket)?;
    stream.write_all(format!("{command}\n").as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// A master-worker HAProxy in its own process group, stopped on drop.
struct Haproxy {
    group: Group,
    admin: PathBuf,
}

impl Haproxy {
    fn start(dir: &Path) -> Haproxy {
        let admin = dir.join("admin.sock");
        let _ = std::fs::remove_file(&admin);
        let mut cmd = Command::new(haproxy_program());
        cmd.args(["-W", "-S"])
            .arg(dir.join("master.sock"))
            .args(["-f", "main.cfg", "-f", "web.cfg"])
            .current_dir(dir);
        let group = Group::spawn("haproxy", cmd, &dir.join("haproxy.log"));
        wait_until(
            &format!("haproxy to open {}", admin.display()),
            Duration::from_secs(10),
            || group.log(),
            || UnixStream::connect(&admin).is_ok(),
        );
        Haproxy { group, admin }
    }

    /// The pid of the worker answering the stats socket (a reload starts a new one).
    fn worker_pid(&self) -> u32 {
        let info = cli(&self.admin, "show info");
        info.lines()
            .find_map(|l| l.strip_prefix("Pid: "))
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no Pid in show info: {info}"))
    }

    /// Waits for a worker other than `old` to answer the stats socket.
    fn wait_for_new_worker(&self, old: u32) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The socket moves to the new worker during the reload: a failed exchange is retried.
            let pid = try_cli(&self.admin, "show info").ok().and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("Pid: "))
                    .and_then(|p| p.trim().parse::<u32>().ok())
            });
            if let Some(pid) = pid
                && pid != old
            {
                return pid;
            }
            assert!(Instant::now() < deadline, "no new worker after the reload");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `(name, address, port, weight, in maintenance)` for every live server of `web`.
    fn live_servers(&self) -> Vec<(String, String, u16, u32, bool)> {
        let state = cli(&self.admin, "show servers state web");
        let mut lines = state.lines();
        assert_eq!(lines.next(), Some("1"), "{state}");
        let header: Vec<&str> = lines.next().unwrap()[2..].split(' ').collect();
        let col = |n: &str| header.iter().position(|h| *h == n).unwrap();
        lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let admin: u32 = f[col("srv_admin_state")].parse().unwrap();
                (
                    f[col("srv_name")].to_string(),
                    f[col("srv_addr")].to_string(),
                    f[col("srv_port")].parse().unwrap(),
                    f[col("srv_uweight")].parse().unwrap(),
                    admin & 1 != 0,
                )
            })
            .collect()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        // The master stops its workers; the group (old workers too, after reloads) is killed
        // once it has exited, or after 5 s.
        self.group
            .stop_with(Signal::SIGTERM, Duration::from_secs(5));
    }
}

/// The servers of `web.cfg` as the same tuples (a disabled server is in maintenance).
fn file_servers(dir: &Path) -> Vec<(String, String, u16, u32, bool)> {
    let text = std::fs::read_to_string(dir.join("web.cfg")).unwrap();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("server "))
        .map(|l| {
            let words: Vec<&str> = l.split('#').next().unwrap().split_whitespace().collect();
            let (addr, port) = words[1].rsplit_once(':').unwrap();
            let weight = words
                .iter()
                .position(|w| *w == "weight")
                .map_or(1, |i| words[i + 1].parse().unwrap());
            (
                words[0].to_string(),
                addr.to_string(),
                port.parse().unwrap(),
                weight,
                words.contains(&"disabled"),
            )
        })
        .collect()
}

fn assert_file_matches_live(dir: &Path, haproxy: &Haproxy) {
    assert_eq!(
        file_servers(dir),
        haproxy.live_servers(),
        "web.cfg:\n{}",
        std::fs::read_to_string(dir.join("web.cfg")).unwrap()
    );
}

/// A test directory: main.cfg with a frontend on a free port, and an elasticd config.
struct Setup {
    dir: Test,
    port: u16,
}

impl Setup {
    fn new(slots: usize, socket: &str, fallback: &str) -> Setup {
        Setup::with_global(slots, socket, fallback, "")
    }

    /// Like `new`, with more lines for main.cfg's `global` section.
    fn with_global(slots: usize, socket: &str, fallback: &str, global: &str) -> Setup {
        let dir = Test::new();
        let d = dir.path();
        let port = free_port();
        dir.write(
            "main.cfg",
            &format!(
                "global\n    stats socket {}/admin.sock level admin\n{global}\
                 defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n\
                 frontend fe\n    bind 127.0.0.1:{port}\n    default_backend web\n",
                d.display()
            ),
        );
        dir.write(
            "config.yaml",
            &format!(
                r#"services:
  web:
    locators: [file: {{ path: backends.json }}]
frontends:
  haproxy:
    check: [{haproxy}, -c, -q, -f, main.cfg, -f, "{{staged}}"]
    reload:
      haproxy_runtime:
        socket: {socket}
        timeout: 5s
        fallback: {fallback}
outputs:
  - template: builtin:haproxy
    path: web.cfg
    frontend: haproxy
    vars: {{ service: web, slots: {slots}, inter: 200ms, rise: 1 }}
"#,
                haproxy = haproxy_program()
            ),
        );
        Setup { dir, port }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn set_backends(&self, backends: &[(&String, u32)]) {
        let entries: Vec<String> = backends
            .iter()
            .map(|(endpoint, weight)| {
                let (address, port) = endpoint.rsplit_once(':').unwrap();
                format!(r#"{{"address": "{address}", "port": {port}, "weight": {weight}}}"#)
            })
            .collect();
        self.dir
            .write("backends.json", &format!("[{}]", entries.join(", ")));
    }

    /// `elasticd render`; returns (exit code, stderr).
    fn render(&self, extra: &[&str]) -> (i32, String) {
        let out = self.dir.render().args(extra).run();
        (out.code, out.stderr)
    }

    /// Renders the first file without reloading (HAProxy is not running yet) and starts HAProxy.
    fn start(&self, backends: &[(&String, u32)]) -> Haproxy {
        self.set_backends(backends);
        let (code, stderr) = self.render(&["--no-reload"]);
        assert_eq!(code, 0, "{stderr}");
        Haproxy::start(self.path())
    }

    /// [`Setup::start`], then waits until HAProxy serves `backends`; returns it and its worker.
    fn serve(&self, backends: &[(&String, u32)]) -> (Haproxy, u32) {
        let haproxy = self.start(backends);
        let endpoints: Vec<&String> = backends.iter().map(|(e, _)| *e).collect();
        wait_for_backends(self.port, &endpoints);
        let worker = haproxy.worker_pid();
        (haproxy, worker)
    }

    /// `elasticd render`, which must succeed; returns its stderr.
    fn render_ok(&self) -> String {
        let (code, stderr) = self.render(&[]);
        assert_eq!(code, 0, "{stderr}");
        stderr
    }

    /// Waits for the fallback's new worker to serve `backends` from the file on disk; returns it.
    fn reloaded(&self, haproxy: &Haproxy, worker: u32, backends: &[&String]) -> u32 {
        let new_worker = haproxy.wait_for_new_worker(worker);
        wait_for_backends(self.port, backends);
        assert_file_matches_live(self.path(), haproxy);
        new_worker
    }
}

const MASTER: &str = "{ master_socket: master.sock }";

#[test]
fn adds_removals_and_replacements_within_the_slots_need_no_reload() {
    let setup = Setup::new(4, "admin.sock", MASTER);
    let d = setup.path();
    let [b2, b3, b4, b5, b6] = [2, 3, 4, 5, 6].map(http_backend);
    let (haproxy, worker) = setup.serve(&[(&b2, 1), (&b3, 1)]);
    assert_file_matches_live(d, &haproxy);

    let steps: [(&str, Vec<(&String, u32)>); 4] = [
        ("add", vec![(&b2, 1), (&b3, 1), (&b4, 1)]),
        ("remove", vec![(&b3, 1), (&b4, 1)]),
        ("replace all", vec![(&b5, 1), (&b6, 1)]),
        ("reweigh", vec![(&b5, 3), (&b6, 1)]),
    ];
    let mut previous_file = std::fs::read_to_string(d.join("web.cfg")).unwrap();
    for (step, backends) in steps {
        setup.set_backends(&backends);
        let (code, stderr) = setup.render(&[]);
        assert_eq!(code, 0, "{step}: {stderr}");
        assert!(
            stderr.contains("updated in place (no reload)"),
            "{step}: {stderr}"
        );
        assert!(!stderr.contains("reloading"), "{step}: {stderr}");
        let endpoints: Vec<&String> = backends.iter().map(|(e, _)| *e).collect();
        wait_for_backends(setup.port, &endpoints);
        assert_eq!(haproxy.worker_pid(), worker, "{step}: HAProxy was reloaded");
        assert_file_matches_live(d, &haproxy);
        // A backend that stays keeps its server line (its slot) untouched.
        let file = std::fs::read_to_string(d.join("web.cfg")).unwrap();
        for endpoint in &endpoints {
            let line = |text: &str| {
                text.lines()
                    .find(|l| l.contains(&format!(" {endpoint} ")))
                    .map(|l| l.split(" weight").next().unwrap().to_string())
            };
            if let Some(before) = line(&previous_file) {
                assert_eq!(line(&file), Some(before), "{step}: {endpoint} moved");
            }
        }
        previous_file = file;
    }
    // Weights took effect: b5 gets three requests for each of b6's.
    let answers: Vec<String> = (0..40).map(|_| get(setup.port)).collect();
    let to_b5 = answers.iter().filter(|a| **a == *b5).count();
    assert!(
        (25..=35).contains(&to_b5),
        "{to_b5} of 40 to {b5}: {answers:?}"
    );

    // A restart from the file on disk runs the same servers.
    drop(haproxy);
    let haproxy = Haproxy::start(d);
    wait_for_backends(setup.port, &[&b5, &b6]);
    assert_file_matches_live(d, &haproxy);

    // Nothing changed: nothing is sent.
    let stderr = setup.render_ok();
    assert!(stderr.contains("unchanged"), "{stderr}");
}

#[test]
fn a_first_switch_to_slots_says_so_and_reloads_once() {
    let setup = Setup::new(4, "admin.sock", MASTER);
    let [b2, b3, b4] = [2, 3, 4].map(http_backend);
    // HAProxy starts from a file rendered without slots.
    let config = setup.dir.read("config.yaml");
    setup
        .dir
        .write("config.yaml", &config.replace("slots: 4, ", ""));
    let (haproxy, worker) = setup.serve(&[(&b2, 1), (&b3, 1)]);

    setup.dir.write("config.yaml", &config);
    let stderr = setup.render_ok();
    assert!(
        stderr.contains("first switch to slots: backend `web` in ")
            && stderr.contains(
                "had no slots before, so a reload is needed once; reloading with the fallback"
            ),
        "{stderr}"
    );
    assert!(!stderr.contains("slots exhausted"), "{stderr}");
    setup.reloaded(&haproxy, worker, &[&b2, &b3]);

    // From then on, changes within the slots are made in place.
    setup.set_backends(&[(&b2, 1), (&b4, 1)]);
    let stderr = setup.render_ok();
    assert!(stderr.contains("updated in place"), "{stderr}");
    wait_for_backends(setup.port, &[&b2, &b4]);
}

#[test]
fn more_backends_than_slots_fall_back_to_a_real_reload() {
    let setup = Setup::new(2, "admin.sock", MASTER);
    let d = setup.path();
    let [b2, b3, b4] = [2, 3, 4].map(http_backend);
    let (haproxy, worker) = setup.serve(&[(&b2, 1), (&b3, 1)]);

    setup.set_backends(&[(&b2, 1), (&b3, 1), (&b4, 1)]);
    let stderr = setup.render_ok();
    assert!(
        stderr.contains("slots exhausted: backend `web` in ")
            && stderr.contains(
                "now has 4 servers, the running HAProxy has 2; reloading with the fallback"
            ),
        "{stderr}"
    );
    assert!(stderr.contains("reloaded"), "{stderr}");
    let new_worker = setup.reloaded(&haproxy, worker, &[&b2, &b3, &b4]);

    // The grown slots stay: going back to two backends is done in place.
    setup.set_backends(&[(&b2, 1), (&b4, 1)]);
    let stderr = setup.render_ok();
    assert!(stderr.contains("updated in place"), "{stderr}");
    wait_for_backends(setup.port, &[&b2, &b4]);
    assert_eq!(haproxy.worker_pid(), new_worker);
    assert_file_matches_live(d, &haproxy);
}

#[test]
fn an_unreachable_runtime_socket_is_named_and_the_fallback_reloads() {
    let setup = Setup::new(4, "wrong.sock", MASTER);
    let d = setup.path();
    let [b2, b3] = [2, 3].map(http_backend);
    let (haproxy, worker) = setup.serve(&[(&b2, 1)]);

    setup.set_backends(&[(&b2, 1), (&b3, 1)]);
    let stderr = setup.render_ok();
    let wrong = d.join("wrong.sock");
    assert!(
        stderr.contains(&format!(
            "the Runtime API update failed: cannot connect to the HAProxy socket {}",
            wrong.display()
        )) && stderr.contains("reloading with the fallback"),
        "{stderr}"
    );
    setup.reloaded(&haproxy, worker, &[&b2, &b3]);
}

#[test]
fn when_the_fallback_fails_too_both_are_reported_and_the_reload_is_owed() {
    let setup = Setup::new(4, "wrong.sock", "{ master_socket: nope.sock }");
    let d = setup.path();
    setup.dir.write(
        "config.yaml",
        &std::fs::read_to_string(d.join("config.yaml"))
            .unwrap()
            .replacen("services:", "state_file: state.json\nservices:", 1),
    );
    let [b2, b3] = [2, 3].map(http_backend);
    let haproxy = setup.start(&[(&b2, 1)]);
    // The first render's --no-reload left a reload owed; settle it through a good socket.
    let state = std::fs::read_to_string(d.join("state.json")).unwrap();
    assert!(state.contains("haproxy"), "{state}");
    setup.dir.write("state.json", "{}");
    wait_for_backends(setup.port, &[&b2]);
    let worker = haproxy.worker_pid();

    setup.set_backends(&[(&b2, 1), (&b3, 1)]);
    let (code, stderr) = setup.render(&[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: frontend `haproxy`: the Runtime API update failed: cannot connect to the \
             HAProxy socket {}",
            d.join("wrong.sock").display()
        )) && stderr.contains(&format!(
            "the fallback reload failed too: frontend `haproxy`: reload through the master \
             socket failed: cannot connect to the HAProxy socket {}",
            d.join("nope.sock").display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "reload failed; the files are installed, and the next `elasticd render` reloads again"
        ),
        "{stderr}"
    );
    let state = std::fs::read_to_string(d.join("state.json")).unwrap();
    assert!(
        state.contains("\"pending_reloads\":[\"haproxy\"]"),
        "{state}"
    );
    // HAProxy runs on, untouched, with the old servers.
    assert_eq!(haproxy.worker_pid(), worker);
    wait_for_backends(setup.port, &[&b2]);
}

#[test]
fn a_tcp_stats_socket_works_like_a_unix_one() {
    let tcp = free_port();
    let setup = Setup::with_global(
        4,
        &format!("127.0.0.1:{tcp}"),
        MASTER,
        &format!("    stats socket 127.0.0.1:{tcp} level admin\n"),
    );
    let [b2, b3] = [2, 3].map(http_backend);
    let (haproxy, worker) = setup.serve(&[(&b2, 1)]);
    setup.set_backends(&[(&b3, 2)]);
    let stderr = setup.render_ok();
    assert!(
        stderr.contains(&format!("updated in place through 127.0.0.1:{tcp}")),
        "{stderr}"
    );
    wait_for_backends(setup.port, &[&b3]);
    assert_eq!(haproxy.worker_pid(), worker);
    assert_file_matches_live(setup.path(), &haproxy);
}

#[test]
fn a_refused_command_is_reported_with_haproxys_answer_and_the_fallback_reloads() {
    let setup = Setup::with_global(4, "user.sock", MASTER, "");
    let d = setup.path();
    // A second stats socket, at `level user`, where `set server` is not allowed.
    let main = std::fs::read_to_string(d.join("main.cfg")).unwrap();
    setup.dir.write(
        "main.cfg",
        &main.replacen(
            "level admin\n",
            &format!(
                "level admin\n    stats socket {}/user.sock level user\n",
                d.display()
            ),
            1,
        ),
    );
    let [b2, b3] = [2, 3].map(http_backend);
    let (haproxy, worker) = setup.serve(&[(&b2, 1)]);

    setup.set_backends(&[(&b2, 1), (&b3, 1)]);
    let stderr = setup.render_ok();
    assert!(
        stderr.contains(&format!(
            "the Runtime API update failed: HAProxy socket {}: `set server web/web_s2 addr {} \
             port {}` failed; HAProxy said: Permission denied; reloading with the fallback",
            d.join("user.sock").display(),
            b3.rsplit_once(':').unwrap().0,
            b3.rsplit_once(':').unwrap().1,
        )),
        "{stderr}"
    );
    setup.reloaded(&haproxy, worker, &[&b2, &b3]);
}

#[test]
fn the_daemon_updates_in_place_on_sigusr1_and_says_so() {
    let setup = Setup::new(4, "admin.sock", MASTER);
    let d = setup.path();
    let config = std::fs::read_to_string(d.join("config.yaml")).unwrap();
    setup.dir.write(
        "config.yaml",
        &format!(
            "daemon: {{ settle_min: 100ms, settle_max: 200ms, jitter: 0 }}\n{}",
            config.replacen("    locators:", "    refresh: 1h\n    locators:", 1)
        ),
    );
    let [b2, b3] = [2, 3].map(http_backend);
    let (haproxy, worker) = setup.serve(&[(&b2, 1)]);
    let daemon = setup
        .dir
        .elasticd(["run", "--config", "config.yaml"])
        .daemon();
    let log = || daemon.log();
    let wait_log = |what: &str| {
        daemon.wait_for(what, Duration::from_secs(15), || log().contains(what));
    };
    // Signal handlers are in place once it says `started`.
    wait_log("started");
    setup.set_backends(&[(&b3, 1)]);
    daemon.signal(Signal::SIGUSR1);
    wait_log("updated haproxy in place (no reload)");
    wait_for_backends(setup.port, &[&b3]);
    assert_eq!(haproxy.worker_pid(), worker);
    assert_file_matches_live(d, &haproxy);
    assert!(!log().contains("reloading"), "{}", log());
}
