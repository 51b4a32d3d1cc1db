//! End-to-end tests of active health checks (`health:`), through the binary, against real
//! backends on 127.0.0.x that this file controls: they answer, stop listening, hang (accept and
//! never reply), answer 500, close connections, flap, and come back.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::{Test, free_port, targets_json};

/// `elasticd run` as every test here starts it.
const RUN: [&str; 5] = ["run", "--config", "config.yaml", "--log", "debug"];

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(u8)]
enum Mode {
    /// 200 with `ok` (and the probe's expected body).
    Up = 0,
    /// The listener is closed: connections are refused.
    Stopped = 1,
    /// Connections are accepted and never answered.
    Hang = 2,
    /// 500.
    Error = 3,
    /// Connections are accepted and closed at once.
    Close = 4,
    /// Answers 200 and 500 in turn.
    Flap = 5,
}

/// A backend on `ip`, port chosen by the OS, whose behaviour the test switches.
struct Backend {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    fn start(ip: &str) -> Backend {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(Mode::Up as u8));
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (mode, requests, stop) = (mode.clone(), requests.clone(), stop.clone());
            std::thread::spawn(move || serve(Some(listener), addr, &mode, &requests, &stop))
        };
        Backend {
            addr,
            mode,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    fn endpoint(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    mut listener: Option<TcpListener>,
    addr: SocketAddr,
    mode: &AtomicU8,
    requests: &AtomicUsize,
    stop: &AtomicBool,
) {
    let hung: Mutex<Vec<TcpStream>> = Mutex::new(Vec::new());
    while !stop.load(Ordering::SeqCst) {
        let current = mode.load(Ordering::SeqCst);
        if current == Mode::Stopped as u8 {
            listener = None;
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let l = match &listener {
            Some(l) => l,
            None => match TcpListener::bind(addr) {
                Ok(l) => {
                    l.set_nonblocking(true).unwrap();
                    listener.insert(l)
                }
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            },
        };
        l.set_nonblocking(true).unwrap();
        let Ok((mut stream, _)) = l.accept() else {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        };
        let n = requests.fetch_add(1, Ordering::SeqCst);
        stream.set_nonblocking(false).unwrap();
        let status = match current {
            c if c == Mode::Hang as u8 => {
                hung.lock().unwrap().push(stream);
                continue;
            }
            c if c == Mode::Close as u8 => continue,
            c if c == Mode::Error as u8 => "500 Internal Server Error",
            c if c == Mode::Flap as u8 && n % 2 == 1 => "500 Internal Server Error",
            _ => "200 OK",
        };
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = [0u8; 2048];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let body = "ok: alive\n";
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}

const INTERVAL_MS: u64 = 200;
const TIMEOUT_MS: u64 = 150;
const RISE: u64 = 2;
const FALL: u64 = 2;
const SETTLE_MS: u64 = 200;
/// Scheduling slack on a loaded 2-core machine (a reload, process start-up).
const SLACK: Duration = Duration::from_millis(2500);

fn config(health: &str, template: &str, server_port: Option<u16>) -> String {
    let server = server_port.map_or(String::new(), |p| {
        format!("server: {{ listen: [\"127.0.0.1:{p}\"] }}\n")
    });
    format!(
        r#"daemon: {{ settle_min: {SETTLE_MS}ms, settle_max: 1s, jitter: 0 }}
{server}services:
  web:
    refresh: 1h
    locators: [file: {{ path: backends.json }}]
    health: {{ {health} }}
frontends:
  fe:
    reload: {{ command: [sh, -c, "echo reload >> reloads"] }}
outputs:
  - {{ template: "{template}", path: upstream.conf, frontend: fe, vars: {{ service: web }} }}
"#
    )
}

fn http_health(extra: &str) -> String {
    format!(
        "http: {{ path: /health, expect_body: alive }}, interval: {INTERVAL_MS}ms, timeout: {TIMEOUT_MS}ms, rise: {RISE}, fall: {FALL}, jitter: 0{extra}"
    )
}

fn start(t: &Test, backends: &[&Backend]) -> support::Group {
    let targets: Vec<String> = backends.iter().map(|b| b.endpoint()).collect();
    t.write("backends.json", &targets_json(&targets));
    t.elasticd(RUN).daemon()
}

fn servers(t: &Test) -> Vec<String> {
    t.read("upstream.conf")
        .lines()
        .filter(|l| l.trim_start().starts_with("server "))
        .map(|l| l.trim().to_string())
        .collect()
}

fn has(t: &Test, b: &Backend) -> bool {
    servers(t)
        .iter()
        .any(|l| l.contains(&b.endpoint()) && !l.contains(" down"))
}

#[test]
fn each_failure_leaves_the_file_within_fall_and_comes_back_within_rise() {
    let t = Test::new();
    let steady = [
        Backend::start("127.0.0.2"),
        Backend::start("127.0.0.3"),
        Backend::start("127.0.0.4"),
    ];
    let flaky = Backend::start("127.0.0.5");
    t.write(
        "config.yaml",
        &config(&http_health(""), "builtin:nginx", None),
    );
    let all: Vec<&Backend> = steady.iter().chain([&flaky]).collect();
    let daemon = start(&t, &all);
    daemon.wait_for("every backend in", Duration::from_secs(10), || {
        t.exists("upstream.conf") && all.iter().all(|b| has(&t, b))
    });
    // Wait until every backend has risen, so that the file reflects probes, not fail-open.
    daemon.wait_for("all healthy", Duration::from_secs(10), || {
        daemon.log().matches("is healthy").count() >= 4
    });
    let leave = Duration::from_millis(INTERVAL_MS * FALL + TIMEOUT_MS + SETTLE_MS) + SLACK;
    let enter = Duration::from_millis(INTERVAL_MS * RISE + SETTLE_MS) + SLACK;
    for mode in [Mode::Stopped, Mode::Hang, Mode::Error, Mode::Close] {
        let started = Instant::now();
        flaky.set(mode);
        daemon.wait_for(&format!("{mode:?} to leave"), leave, || !has(&t, &flaky));
        let left = started.elapsed();
        assert!(
            steady.iter().all(|b| has(&t, b)),
            "{mode:?}: {:?}",
            servers(&t)
        );
        let started = Instant::now();
        flaky.set(Mode::Up);
        daemon.wait_for(&format!("{mode:?} to come back"), enter, || has(&t, &flaky));
        eprintln!(
            "{mode:?}: left after {} ms, back after {} ms",
            left.as_millis(),
            started.elapsed().as_millis()
        );
    }
    let log = daemon.log();
    assert!(log.contains("is unhealthy: connect failed"), "{log}");
    assert!(
        log.contains("is unhealthy: no answer within 150ms"),
        "{log}"
    );
    assert!(log.contains("is unhealthy: answered status 500"), "{log}");
    assert!(log.contains("applied web +0/-1"), "{log}");
    assert!(log.contains("applied web +1/-0"), "{log}");
}

#[test]
fn a_failing_backend_is_probed_at_the_transition_interval_until_it_falls() {
    // A long interval and a short transition_interval: after the first failed probe, the next
    // ones come every transition_interval, so the backend leaves about
    // (fall - 1) x transition_interval + settle after it, not (fall - 1) x interval.
    const INTERVAL: Duration = Duration::from_secs(4);
    let t = Test::new();
    let steady = [Backend::start("127.0.0.2"), Backend::start("127.0.0.3")];
    let flaky = Backend::start("127.0.0.4");
    let health = format!(
        "http: {{ path: /health }}, interval: {}ms, transition_interval: 200ms, timeout: {TIMEOUT_MS}ms, rise: 2, fall: 3, jitter: 0, initial: healthy",
        INTERVAL.as_millis()
    );
    t.write("config.yaml", &config(&health, "builtin:nginx", None));
    let all: Vec<&Backend> = steady.iter().chain([&flaky]).collect();
    let daemon = start(&t, &all);
    daemon.wait_for("first apply", Duration::from_secs(10), || t.reloads() == 1);
    let before = flaky.requests.load(Ordering::SeqCst);
    flaky.set(Mode::Error);
    // The first failing probe comes at the next regular one, within one interval.
    daemon.wait_for("the first failing probe", INTERVAL + SLACK, || {
        flaky.requests.load(Ordering::SeqCst) > before
    });
    let first_failure = Instant::now();
    // Were transition_interval ignored, the two more failures fall needs would take two full
    // intervals (8 s) before the settle window even starts.
    let bound = INTERVAL * 2;
    daemon.wait_for("the backend to leave", bound, || !has(&t, &flaky));
    let took = first_failure.elapsed();
    assert!(
        took < bound,
        "left {took:?} after the first failed probe\n{}",
        daemon.log()
    );
    assert!(steady.iter().all(|b| has(&t, b)), "{:?}", servers(&t));
    eprintln!(
        "left {} ms after the first failed probe (interval {} ms)",
        took.as_millis(),
        INTERVAL.as_millis()
    );
}

#[test]
fn when_most_backends_fail_every_one_is_kept_and_the_status_says_so() {
    let t = Test::new();
    let a = Backend::start("127.0.0.2");
    let b = Backend::start("127.0.0.3");
    let port = free_port();
    t.write(
        "config.yaml",
        &config(&http_health(""), "builtin:nginx", Some(port)),
    );
    let daemon = start(&t, &[&a, &b]);
    daemon.wait_for("both healthy", Duration::from_secs(10), || {
        daemon.log().matches("is healthy").count() >= 2
    });
    // The start-up apply, before any probe, already failed open (both not checked yet).
    let fail_open = || daemon.log().matches("health checks fail open").count();
    let before = fail_open();
    a.set(Mode::Error);
    b.set(Mode::Error);
    daemon.wait_for("fail open", Duration::from_secs(10), || {
        fail_open() > before
    });
    std::thread::sleep(Duration::from_millis(INTERVAL_MS * 3));
    assert!(has(&t, &a) && has(&t, &b), "{:?}", servers(&t));
    let status = get(port, "/api/v1/status");
    let health = &status["services"][0]["health"];
    assert_eq!(health["fail_open"], true, "{status}");
    assert_eq!(health["unhealthy"], 2, "{status}");
    assert!(
        health["fail_open_reason"]
            .as_str()
            .unwrap()
            .contains("2 of 2 backends unhealthy"),
        "{status}"
    );
    assert_eq!(status["services"][0]["backends"][0]["healthy"], false);
    let metrics = get_text(port, "/metrics");
    assert!(
        metrics.contains("elasticd_health_fail_open{service=\"web\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "elasticd_backend_up{{service=\"web\",backend=\"{}\"}} 0",
            a.endpoint()
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("elasticd_health_transitions_total{service=\"web\",to=\"unhealthy\"} 2")
    );

    // One comes back: the other is removed now that it is the only one failing.
    a.set(Mode::Up);
    daemon.wait_for("b removed", Duration::from_secs(10), || !has(&t, &b));
    assert!(has(&t, &a));
    assert!(daemon.log().contains("health checks no longer fail open"));
}

#[test]
fn a_backend_that_flaps_every_probe_never_changes_the_file() {
    let t = Test::new();
    let a = Backend::start("127.0.0.2");
    let b = Backend::start("127.0.0.3");
    let c = Backend::start("127.0.0.4");
    t.write(
        "config.yaml",
        &config(&http_health(", initial: healthy"), "builtin:nginx", None),
    );
    let daemon = start(&t, &[&a, &b, &c]);
    daemon.wait_for("first apply", Duration::from_secs(10), || t.reloads() == 1);
    c.set(Mode::Flap);
    let before = c.requests.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(3));
    let probes = c.requests.load(Ordering::SeqCst) - before;
    assert!(probes >= 8, "only {probes} probes in 3 s");
    // Passes and failures alternate: never `fall` failures in a row, so never a transition.
    assert_eq!(t.reloads(), 1, "{}", daemon.log());
    assert!(has(&t, &c));
    assert!(!daemon.log().contains("is unhealthy"), "{}", daemon.log());
}

#[test]
fn mark_mode_renders_an_unhealthy_backend_down_instead_of_removing_it() {
    let t = Test::new();
    let a = Backend::start("127.0.0.2");
    let b = Backend::start("127.0.0.3");
    let c = Backend::start("127.0.0.4");
    t.write(
        "config.yaml",
        &config(
            &http_health(", initial: healthy, unhealthy: mark"),
            "builtin:nginx",
            None,
        ),
    );
    let daemon = start(&t, &[&a, &b, &c]);
    daemon.wait_for("first apply", Duration::from_secs(10), || t.reloads() == 1);
    c.set(Mode::Stopped);
    daemon.wait_for("c down", Duration::from_secs(10), || {
        servers(&t)
            .iter()
            .any(|l| l.starts_with(&format!("server {} down", c.endpoint())))
    });
    assert!(has(&t, &a) && has(&t, &b), "{:?}", servers(&t));
    c.set(Mode::Up);
    daemon.wait_for("c up", Duration::from_secs(10), || has(&t, &c));
}

#[test]
fn render_and_locate_with_health_probe_once() {
    let t = Test::new();
    let up = Backend::start("127.0.0.2");
    let up2 = Backend::start("127.0.0.3");
    let down = Backend::start("127.0.0.4");
    down.set(Mode::Error);
    let targets = [up.endpoint(), up2.endpoint(), down.endpoint()];
    t.write("backends.json", &targets_json(&targets));
    t.write(
        "config.yaml",
        &config(&http_health(""), "builtin:nginx", None),
    );
    let out = t
        .elasticd(["locate", "--config", "config.yaml", "--health"])
        .run()
        .success();
    let row = |b: &Backend| {
        out.stdout
            .lines()
            .find(|l| l.contains(&b.endpoint()))
            .unwrap_or_default()
            .to_string()
    };
    assert!(out.stdout.starts_with("SERVICE"), "{out}");
    assert!(
        out.stdout.lines().next().unwrap().ends_with("HEALTH"),
        "{out}"
    );
    assert!(row(&up).ends_with(" healthy"), "{out}");
    assert!(row(&down).ends_with(" unhealthy"), "{out}");
    assert!(out.stderr.contains("answered status 500"), "{out}");

    // Without --health nothing is probed and every backend is rendered.
    t.render().run().success();
    assert!(has(&t, &down));
    let probes = down.requests.load(Ordering::SeqCst);
    t.elasticd(["render", "--config", "config.yaml", "--health"])
        .run()
        .success();
    assert_eq!(down.requests.load(Ordering::SeqCst), probes + 1);
    assert!(
        has(&t, &up) && has(&t, &up2) && !has(&t, &down),
        "{:?}",
        servers(&t)
    );

    // Nothing probed means nothing judged, even where the settings would let every backend go.
    t.write(
        "config.yaml",
        &config(
            &http_health(", max_unhealthy_ratio: 1.0, unhealthy: mark"),
            "builtin:nginx",
            None,
        ),
    );
    t.render().run().success();
    assert!(
        servers(&t).iter().all(|l| !l.contains(" down")),
        "{:?}",
        servers(&t)
    );
    t.elasticd(["render", "--config", "config.yaml", "--health"])
        .run()
        .success();
    let marked: Vec<String> = servers(&t)
        .into_iter()
        .filter(|l| l.contains(" down"))
        .collect();
    assert_eq!(marked.len(), 1, "{:?}", servers(&t));
    assert!(marked[0].contains(&down.endpoint()));
}

#[test]
fn bad_health_settings_are_config_errors_with_their_location() {
    let t = Test::new();
    for (health, want) in [
        ("interval: 1s", "name one probe"),
        ("tcp: {}, http: {}", "only one probe kind"),
        ("tcp: {}, rise: 0", "`rise` must be from 1 to 100"),
        ("tcp: {}, max_unhealthy_ratio: 2", "between 0.0 and 1.0"),
        (
            "tcp: {}, interval: 1s, timeout: 5s",
            "must not be longer than `interval`",
        ),
        ("http: { path: nope }", "must be a URL path"),
        ("http: { expect_status: 700 }", "not an HTTP status"),
        ("http: { method: POST }", "unknown variant"),
        ("tcp: {}, typo: 1", "unknown field `typo`"),
    ] {
        t.write("config.yaml", &config(health, "builtin:nginx", None));
        let out = t.elasticd(["check", "--config", "config.yaml"]).run();
        assert_eq!(out.code, 2, "{health}: {out}");
        assert!(out.stderr.contains(want), "{health}: {out}");
        assert!(out.stderr.contains("config.yaml:6:"), "{health}: {out}");
    }
}

#[test]
fn sighup_keeps_the_state_of_backends_that_stay() {
    let t = Test::new();
    let a = Backend::start("127.0.0.2");
    let b = Backend::start("127.0.0.3");
    let dead = Backend::start("127.0.0.4");
    dead.set(Mode::Stopped);
    let health = http_health("").replace("rise: 2", "rise: 3");
    t.write("config.yaml", &config(&health, "builtin:nginx", None));
    let mut daemon = start(&t, &[&a, &b, &dead]);
    daemon.wait_for("the dead one out", Duration::from_secs(10), || {
        t.exists("upstream.conf") && has(&t, &a) && has(&t, &b) && !has(&t, &dead)
    });
    let fail_open_before = daemon.log().matches("health checks fail open").count();
    // Were the states reset, every backend would start unhealthy again: all three would fail
    // open, and the dead one would be back in the file until the others rise again.
    for changed in [
        health.clone(),
        health.replace("interval: 200ms", "interval: 250ms"),
    ] {
        t.write("config.yaml", &config(&changed, "builtin:nginx", None));
        daemon.signal(nix::sys::signal::Signal::SIGHUP);
        daemon.wait_for("the reload", Duration::from_secs(5), || {
            daemon.log().matches("config reloaded").count() == if changed == health { 1 } else { 2 }
        });
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            assert!(
                has(&t, &a) && has(&t, &b) && !has(&t, &dead),
                "{:?}\n{}",
                servers(&t),
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let fail_open_after = daemon.log().matches("health checks fail open").count();
    assert_eq!(fail_open_before, fail_open_after, "{}", daemon.log());
    daemon.assert_running("after two SIGHUPs");
}

#[test]
fn tls_probes_reach_an_https_backend_whose_certificate_names_something_else() {
    let t = Test::new();
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=not-this-backend.test",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ])
        .current_dir(t.path())
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    t.write("site.pem", &(t.read("cert.pem") + &t.read("key.pem")));
    let port = free_port();
    t.write(
        "haproxy.cfg",
        &format!(
            "defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n\
             frontend https\n    bind 127.0.0.1:{port} ssl crt {}/site.pem\n\
             \x20   http-request return status 200 content-type text/plain string alive if {{ path /health }}\n\
             \x20   http-request return status 503 content-type text/plain string nope\n",
            t.path_str()
        ),
    );
    let mut cmd = std::process::Command::new(support::program("haproxy", "haproxy"));
    cmd.args(["-db", "-f", "haproxy.cfg"]).current_dir(t.path());
    let haproxy = support::Group::spawn("haproxy", cmd, &t.join("haproxy.log"));
    haproxy.wait_for("haproxy to listen", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    t.write(
        "backends.json",
        &targets_json(&[format!("127.0.0.1:{port}")]),
    );
    let locate = |http: &str| {
        let health = format!("http: {{ {http} }}, timeout: 2s");
        t.write("config.yaml", &config(&health, "builtin:nginx", None));
        t.elasticd(["locate", "--config", "config.yaml", "--health"])
            .run()
            .success()
    };
    let out = locate("path: /health, tls: true, expect_body: alive, host: backend.test");
    assert!(
        out.stdout.lines().nth(1).unwrap().ends_with(" healthy"),
        "{out}"
    );
    let out = locate("path: /elsewhere, tls: true");
    assert!(
        out.stdout.lines().nth(1).unwrap().ends_with(" unhealthy"),
        "{out}"
    );
    assert!(out.stderr.contains("answered status 503"), "{out}");
    // Plain HTTP to the TLS port is no answer at all.
    let out = locate("path: /health");
    assert!(
        out.stdout.lines().nth(1).unwrap().ends_with(" unhealthy"),
        "{out}"
    );
}

fn get_text(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    body.to_string()
}

fn get(port: u16, path: &str) -> serde_json::Value {
    serde_json::from_str(&get_text(port, path)).unwrap()
}

/// Live frontends under load: a backend that dies while its locator still lists it.
mod live {
    use std::collections::BTreeSet;
    use std::time::{Duration, Instant};

    use super::support::live::{
        Fault, Frontend, Kind, Load, Outcome, Pool, Switchable, switchable_document,
    };

    const HEALTH: &str = "    health: { http: {}, interval: 200ms, timeout: 150ms, rise: 2, fall: 2, jitter: 0, initial: healthy, unhealthy: UNHEALTHY }\n";
    /// interval × fall + timeout + settle_min of the live config (100ms), plus the reload and
    /// scheduling on a loaded machine.
    const DETECTION: Duration = Duration::from_millis(200 * 2 + 150 + 100 + 2500);

    fn start(kind: Kind, pool: &Pool, unhealthy: &str) -> Frontend {
        let mut fe = Frontend::new(kind);
        fe.start(&pool.document_in_zone(&[0, 1, 2], Some("start")));
        fe.write("backends.json", &pool.document(&[0, 1, 2]));
        let locators = "    locators: [file: { path: backends.json }]\n";
        let config = fe.read("config.yaml");
        assert!(config.contains(locators), "{config}");
        let health = HEALTH.replace("UNHEALTHY", unhealthy);
        fe.write(
            "config.yaml",
            &config.replace(locators, &format!("{locators}{health}")),
        );
        fe.start_daemon();
        fe
    }

    /// Stops backend 1 under load and waits until no request reaches it; returns the load and
    /// when the backend stopped. Every failed request falls inside the detection window.
    /// `steady` runs once all three backends serve, just before backend 1 stops.
    fn kill_one_under_load(
        fe: &Frontend,
        pool: &mut Pool,
        steady: &mut dyn FnMut(),
    ) -> (Load, Instant) {
        let load = Load::start(fe.port, 2, Duration::from_millis(2));
        let window = Duration::from_millis(600);
        load.wait_exact(
            &pool.ids(&[0, 1, 2]),
            window,
            Duration::from_secs(30),
            || fe.logs(),
        );
        steady();
        let stopped = Instant::now();
        pool.stop(1);
        load.wait_exact(&pool.ids(&[0, 2]), window, Duration::from_secs(15), || {
            fe.logs()
        });
        // Long enough after the window for late failures to show.
        std::thread::sleep(Duration::from_secs(1));
        let failures = load.failures(stopped);
        let late: Vec<_> = failures
            .iter()
            .filter(|e| e.at > stopped + DETECTION)
            .map(|e| format!("{:?} after {:?}", e.outcome, e.at - stopped))
            .collect();
        eprintln!(
            "{} requests failed after the backend stopped, the last {:?} after",
            failures.len(),
            failures.last().map(|e| e.at - stopped)
        );
        assert!(
            late.is_empty(),
            "failed after the window: {late:?}\n{}",
            fe.logs()
        );
        (load, stopped)
    }

    /// interval × rise + settle_min of the live config, plus the reload and scheduling on a
    /// loaded machine: the bound for a backend's return.
    const RETURN: Duration = Duration::from_millis(200 * 2 + 100 + 2500);
    /// How long a load client waits for an answer before it counts the request as failed: a
    /// hanging backend must not hold the clients for nginx's `proxy_read_timeout` (60 s, which
    /// neither the live nginx.conf nor the built-in template changes), or the load would stop.
    const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

    /// Polls the rendered upstream until `backend` is in it (`present`) or not; how long that
    /// took from `since`.
    fn wait_file(
        fe: &Frontend,
        backend: &str,
        present: bool,
        since: Instant,
        bound: Duration,
    ) -> Duration {
        let deadline = since + bound + Duration::from_secs(10);
        loop {
            let listed = fe
                .read("upstream.conf")
                .lines()
                .any(|l| l.contains(backend) && !l.contains(" down"));
            if listed == present {
                return since.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "{backend} {} the file within {:?}\n{}",
                if present {
                    "did not re-enter"
                } else {
                    "did not leave"
                },
                bound + Duration::from_secs(10),
                fe.logs()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Backend s1 behind nginx, under continuous load, stops, hangs, answers 500 and closes
    /// connections in turn, and after each comes back. Each time it leaves the rendered file
    /// within the detection window and re-enters it within interval × rise + settle (plus
    /// slack), requests reach it again, and requests fail only when sent inside the detection
    /// window (counted at the time they were sent: a hanging request fails a second later).
    #[test]
    fn nginx_drops_and_takes_back_a_failing_backend_under_load_in_every_failure_mode() {
        let ips = [20, 21, 22].map(|i| std::net::Ipv4Addr::new(127, 0, 0, i));
        let backends: Vec<Switchable> = (0..3)
            .map(|i| Switchable::start(&format!("s{i}"), ips[i]))
            .collect();
        let all: Vec<&Switchable> = backends.iter().collect();
        let ids = |indexes: &[usize]| -> BTreeSet<String> {
            indexes.iter().map(|&i| backends[i].id.clone()).collect()
        };
        let mut fe = Frontend::new(Kind::Nginx);
        fe.start(&switchable_document(&all, Some("start")));
        fe.write("backends.json", &switchable_document(&all, None));
        let locators = "    locators: [file: { path: backends.json }]\n";
        let config = fe.read("config.yaml");
        assert!(config.contains(locators), "{config}");
        let health = HEALTH.replace("UNHEALTHY", "remove");
        fe.write(
            "config.yaml",
            &config.replace(locators, &format!("{locators}{health}")),
        );
        fe.start_daemon();

        let load = Load::start_with_timeout(fe.port, 4, Duration::from_millis(2), ANSWER_TIMEOUT);
        let window = Duration::from_millis(600);
        let logs = || fe.logs();
        load.wait_exact(&ids(&[0, 1, 2]), window, Duration::from_secs(30), logs);
        let steady = Instant::now();
        let s1 = backends[1].target();
        let mut report = Vec::new();
        let mut problems = Vec::new();
        let mut counted = 0;
        for fault in [Fault::Stopped, Fault::Hang, Fault::Status500, Fault::Close] {
            let failed_at = Instant::now();
            backends[1].set(fault);
            let left = wait_file(&fe, &s1, false, failed_at, DETECTION);
            load.wait_exact(&ids(&[0, 2]), window, Duration::from_secs(15), logs);
            // Requests sent just before the window closed fail up to ANSWER_TIMEOUT later.
            std::thread::sleep(ANSWER_TIMEOUT + Duration::from_millis(500));
            let back_at = Instant::now();
            backends[1].set(Fault::None);
            let back = wait_file(&fe, &s1, true, back_at, RETURN);
            load.wait_exact(&ids(&[0, 1, 2]), window, Duration::from_secs(15), logs);
            let served_again = load.first_from(&ids(&[1]), back_at).map(|t| t - back_at);
            let end = Instant::now();
            // A request already on its way when the fault began may fail a moment before it.
            let from = failed_at - Duration::from_millis(50);
            let failures: Vec<_> = load
                .failures_sent(from)
                .into_iter()
                .filter(|e| e.started < end)
                .collect();
            counted += failures.len();
            let errors = failures
                .iter()
                .filter(|e| matches!(e.outcome, Outcome::Error(_)))
                .count();
            let late: Vec<_> = failures
                .iter()
                .filter(|e| e.started > failed_at + DETECTION)
                .map(|e| format!("{:?} sent {:?} after", e.outcome, e.started - failed_at))
                .collect();
            let last = failures
                .iter()
                .map(|e| e.started)
                .max()
                .map(|t| t.saturating_duration_since(failed_at));
            let line = format!(
                "{fault:?}: left the file after {left:?} (bound {DETECTION:?}), back after {back:?} (bound {RETURN:?}), \
                 served again {served_again:?} after; {} requests failed ({errors} errors, {} non-200 answers), the last sent {last:?} after the fault",
                failures.len(),
                failures.len() - errors
            );
            eprintln!("{line}");
            report.push(line.clone());
            assert!(left <= DETECTION, "{line}\n{}", fe.logs());
            assert!(back <= RETURN, "{line}\n{}", fe.logs());
            if !late.is_empty() {
                problems.push(format!("{fault:?}: failed after the window: {late:?}"));
            }
        }
        // Nothing failed while every backend served: before the first fault, nor between them
        // (failures_sent above covers each fault's own window and return).
        let all_failures = load.failures_sent(steady);
        let totals = load.stop();
        eprintln!(
            "nginx under load: {} requests ({:.0}/s), {} failed ({} errors, {} 5xx), {} stale retries",
            totals.requests,
            totals.rate(),
            totals.failed(),
            totals.errors,
            totals.status_5xx,
            totals.stale_retries
        );
        assert!(
            problems.is_empty(),
            "{problems:?}\n{report:?}\n{}",
            fe.logs()
        );
        assert_eq!(
            all_failures.len(),
            counted,
            "requests failed outside the faults: {:?}\n{report:?}",
            all_failures
                .iter()
                .map(|e| format!(
                    "{:?} sent {:?} after the steady state",
                    e.outcome,
                    e.started - steady
                ))
                .take(10)
                .collect::<Vec<_>>()
        );
        let log = fe.daemon_log();
        assert_eq!(
            log.matches(&format!("backend {s1} is unhealthy")).count(),
            4,
            "{log}"
        );
    }

    /// The pid of the HAProxy worker that answers the stats socket (a reload starts a new one).
    fn worker_pid(fe: &Frontend) -> u32 {
        use std::io::{Read, Write};
        let mut socket = std::os::unix::net::UnixStream::connect(fe.path("admin.sock"))
            .unwrap_or_else(|e| panic!("stats socket: {e}"));
        socket.write_all(b"show info\n").unwrap();
        let mut info = String::new();
        socket.read_to_string(&mut info).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("Pid: "))
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no Pid in show info: {info}"))
    }

    #[test]
    fn haproxy_runtime_marks_a_dead_backend_in_place_without_a_reload() {
        let mut pool = Pool::start(3);
        let fe = start(Kind::HaproxyRuntime, &pool, "mark");
        // Taken once the load reaches every backend, well after the daemon's first apply (the
        // one real reload) has handed the stats socket to its worker.
        let mut worker = 0;
        let (load, _) = kill_one_under_load(&fe, &mut pool, &mut || worker = worker_pid(&fe));
        assert_ne!(worker, 0);
        let dead = pool.backends[1].target();
        // HAProxy can stop sending to the dead server (its own retries) before elasticd's
        // apply lands, so the file is waited for rather than read once.
        super::support::wait_until(
            "the dead backend to be marked disabled",
            DETECTION + Duration::from_secs(10),
            || fe.read("backend.cfg"),
            || {
                fe.read("backend.cfg")
                    .lines()
                    .any(|l| l.contains(&dead) && l.trim_end().ends_with(" disabled"))
            },
        );
        // The `applied` line comes after the file is in place and the server updated.
        super::support::wait_until(
            "the in-place apply to be logged",
            Duration::from_secs(10),
            || fe.daemon_log(),
            || {
                fe.daemon_log()
                    .lines()
                    .any(|l| l.contains("applied") && l.contains("in place (no reload)"))
            },
        );
        let log = fe.daemon_log();
        // The first apply (the daemon's start) was the only real reload.
        assert!(
            !log.lines()
                .skip_while(|l| !l.contains("is unhealthy"))
                .any(|l| l.contains("applied")
                    && l.contains("reloaded fe")
                    && !l.contains("in place")),
            "{log}"
        );
        // No reload happened: the worker that served before the transition still does.
        assert_eq!(worker_pid(&fe), worker, "HAProxy was reloaded\n{log}");
        load.stop();
    }
}
