use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::backend::{Backend, parse_target};
use crate::yaml;

fn parse(text: &str) -> Result<HealthConfig, String> {
    let node = yaml::parse(text).map_err(|e| format!("{e:?}"))?;
    node.deserialize::<HealthConfig>().map_err(|e| e.message)
}

fn backend(endpoint: &str) -> Backend {
    let (a, p) = parse_target(endpoint).unwrap();
    Backend::new(a, p.unwrap())
}

#[test]
fn defaults_follow_the_documented_values() {
    let c = parse("tcp: {}").unwrap();
    assert_eq!(c.probe, ProbeConfig::Tcp(tcp::TcpProbe::default()));
    assert_eq!(c.interval, Duration::from_secs(2));
    assert_eq!(c.timeout, Duration::from_secs(1));
    assert_eq!(c.transition_interval, c.interval);
    assert_eq!((c.rise, c.fall), (2, 3));
    assert_eq!(c.jitter, 0.1);
    assert_eq!(c.initial, Initial::Unhealthy);
    assert_eq!(c.startup, Startup::Initial);
    assert_eq!(c.max_unhealthy_ratio, 0.5);
    assert_eq!(c.unhealthy, Unhealthy::Remove);
    let ProbeConfig::Http(h) = parse("http: {}").unwrap().probe else {
        panic!("not http");
    };
    assert_eq!(h.path, "/");
    assert!(h.expect_status.contains(200) && h.expect_status.contains(399));
    assert!(!h.expect_status.contains(404));
}

#[test]
fn expect_status_takes_numbers_ranges_and_lists() {
    let status = |text: &str| match parse(text).unwrap().probe {
        ProbeConfig::Http(h) => h.expect_status,
        _ => panic!("not http"),
    };
    assert_eq!(status("http: { expect_status: 204 }").0, [(204, 204)]);
    assert_eq!(
        status("http: { expect_status: [200, \"300-302\"] }").0,
        [(200, 200), (300, 302)]
    );
    for bad in ["99", "\"300-200\"", "\"2xx\"", "[]"] {
        let err = parse(&format!("http: {{ expect_status: {bad} }}")).unwrap_err();
        assert!(err.contains("expect_status"), "{bad}: {err}");
    }
}

#[test]
fn head_cannot_look_for_a_body() {
    let err = parse("http: { method: HEAD, expect_body: ok }").unwrap_err();
    assert!(err.contains("`expect_body` needs `method: GET`"), "{err}");
}

#[test]
fn header_values_that_could_split_a_request_are_refused() {
    let err = parse("http: { headers: { X-A: \"a\\r\\nX-B: b\" } }").unwrap_err();
    assert!(err.contains("not a valid header value"), "{err}");
    let err = parse("http: { headers: { \"bad name\": x } }").unwrap_err();
    assert!(err.contains("not a valid header name"), "{err}");
    let err = parse("http: { host: \"a\\nb\" }").unwrap_err();
    assert!(err.contains("`host`"), "{err}");
}

fn config(extra: &str) -> HealthConfig {
    parse(&format!("{{ tcp: {{}}, rise: 2, fall: 3{extra} }}")).unwrap()
}

#[test]
fn filter_removes_marks_and_fails_open() {
    let set: Vec<Backend> = (1..=4)
        .map(|i| backend(&format!("10.0.0.{i}:80")))
        .collect();
    let down = |n: usize| move |b: &Backend| b.endpoint() > format!("10.0.0.{n}:80");
    // One of four down: removed.
    let f = checker::filter(&config(""), 1, &set, |b| !down(3)(b));
    assert_eq!(f.backends.len(), 3);
    assert_eq!((f.unhealthy, f.fail_open), (1, None));
    assert!(f.backends.iter().all(|b| b.healthy == Some(true)));
    // Two of four is exactly the ratio: still removed.
    let f = checker::filter(&config(""), 1, &set, |b| !down(2)(b));
    assert_eq!(f.backends.len(), 2);
    // Three of four: more than half, so all are kept and rendered as healthy.
    let f = checker::filter(&config(""), 1, &set, |b| !down(1)(b));
    assert_eq!(f.backends.len(), 4);
    assert!(f.backends.iter().all(|b| b.healthy == Some(true)));
    let reason = f.fail_open.unwrap();
    assert!(
        reason.contains("3 of 4 backends unhealthy (75%)"),
        "{reason}"
    );
    // min_backends counts too.
    let f = checker::filter(&config(""), 3, &set, |b| !down(2)(b));
    assert!(f.fail_open.unwrap().contains("fewer than min_backends 3"));
    // Mark keeps every backend with its state.
    let f = checker::filter(&config(", unhealthy: mark"), 1, &set, |b| !down(3)(b));
    let states: Vec<_> = f.backends.iter().map(|b| b.healthy).collect();
    assert_eq!(states, [Some(true), Some(true), Some(true), Some(false)]);
    // Nothing to probe: nothing to say.
    let f = checker::filter(&config(""), 1, &[], |_| false);
    assert_eq!((f.backends.len(), f.fail_open), (0, None));
}

async fn answer(listener: TcpListener, status: &'static str, body: &'static str) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes()).await;
        });
    }
}

#[tokio::test]
async fn http_probes_judge_status_and_body_and_time_out() {
    let ok = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ok_port = ok.local_addr().unwrap().port();
    tokio::spawn(answer(ok, "200 OK", "status: ready"));
    let err = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err_port = err.local_addr().unwrap().port();
    tokio::spawn(answer(err, "503 Service Unavailable", "draining"));
    // Accepts (the kernel does, from the backlog) and never answers.
    let hang = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_port = hang.local_addr().unwrap().port();
    let closed_port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let probe = |text: &str, port: u16| {
        let c = parse(text).unwrap();
        async move {
            c.probe(
                &c.target(&backend("127.0.0.1:1").address, port),
                &mut crate::health::Session::default(),
            )
            .await
        }
    };
    assert_eq!(probe("http: {}", ok_port).await, Ok(()));
    assert_eq!(
        probe("http: { expect_body: draining }", ok_port)
            .await
            .unwrap_err(),
        "answered status 200 without `draining` in the body"
    );
    assert_eq!(probe("http: { method: HEAD }", ok_port).await, Ok(()));
    assert_eq!(probe("http: { expect_body: ready }", ok_port).await, Ok(()));
    assert_eq!(
        probe("http: {}", err_port).await.unwrap_err(),
        "answered status 503"
    );
    assert_eq!(
        probe("http: { expect_status: 503 }", err_port).await,
        Ok(())
    );
    let started = std::time::Instant::now();
    let e = probe("{ http: {}, timeout: 200ms }", hang_port)
        .await
        .unwrap_err();
    assert_eq!(e, "no answer within 200ms");
    assert!(started.elapsed() < Duration::from_secs(2));
    let e = probe("http: {}", closed_port).await.unwrap_err();
    assert!(e.starts_with("connect failed"), "{e}");
    assert!(probe("tcp: {}", hang_port).await.is_ok());
    assert!(probe("tcp: {}", closed_port).await.is_err());
    // The probe's own port wins over the backend's.
    assert!(
        probe(&format!("tcp: {{ port: {ok_port} }}"), closed_port)
            .await
            .is_ok()
    );
    drop(hang);
}

#[tokio::test]
async fn rise_and_fall_count_in_a_row_and_only_transitions_are_reported() {
    let listener = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let target = backend(&format!("127.0.0.2:{port}"));
    let config = config(", interval: 100ms, timeout: 100ms, jitter: 0");
    let mut checker = Checker::new();
    let mut events = checker.start().unwrap();
    checker.set_targets("web", Some(&config), std::slice::from_ref(&target));
    let state = |c: &Checker| c.health("web", &target).unwrap();
    assert!(!state(&checker).healthy && !state(&checker).probed);
    // Two passes (rise 2) make it healthy: one event.
    let event = events.recv().await.unwrap();
    assert!(event.healthy, "{event:?}");
    assert_eq!(event.backend, target.endpoint());
    assert_eq!(state(&checker).passes, 2);
    // Three failures in a row (fall 3) make it unhealthy.
    drop(listener);
    let event = events.recv().await.unwrap();
    assert!(!event.healthy);
    assert!(event.reason.unwrap().starts_with("connect failed"));
    assert_eq!(state(&checker).fails, 3);
    // Leaving the set forgets it and stops its probes.
    checker.set_targets("web", Some(&config), &[]);
    assert!(checker.health("web", &target).is_none());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(events.try_recv().is_err());
}

#[tokio::test]
async fn unchanged_backends_keep_their_state_when_the_set_or_config_changes() {
    let listener = TcpListener::bind("127.0.0.3:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let a = backend(&format!("127.0.0.3:{port}"));
    let b = backend("127.0.0.3:1");
    let config1 = config(", interval: 100ms, timeout: 100ms, jitter: 0");
    let mut checker = Checker::new();
    let mut events = checker.start().unwrap();
    checker.set_targets("web", Some(&config1), std::slice::from_ref(&a));
    assert!(events.recv().await.unwrap().healthy);
    checker.set_targets("web", Some(&config1), &[a.clone(), b.clone()]);
    assert!(checker.health("web", &a).unwrap().healthy);
    assert!(!checker.health("web", &b).unwrap().healthy);
    let config2 = config(", interval: 200ms, timeout: 100ms, jitter: 0");
    checker.set_targets("web", Some(&config2), &[a.clone(), b.clone()]);
    assert!(checker.health("web", &a).unwrap().healthy);
    // A service that loses `health:` is forgotten.
    checker.retain_services(|_| false);
    assert!(checker.health("web", &a).is_none());
    drop(listener);
}

#[tokio::test]
async fn probe_once_decides_on_one_probe() {
    let listener = TcpListener::bind("127.0.0.4:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let up = backend(&format!("127.0.0.4:{port}"));
    let down = backend("127.0.0.4:1");
    let mut checker = Checker::new();
    let config = config("");
    checker
        .probe_once("web", &config, &[up.clone(), down.clone()])
        .await;
    assert!(checker.health("web", &up).unwrap().healthy);
    assert!(!checker.health("web", &down).unwrap().healthy);
    let f = checker.filter("web", &config, 1, &[up.clone(), down.clone()]);
    assert_eq!(f.backends.len(), 1);
    assert_eq!(f.unchecked, 0);
    // A new backend not probed yet counts as unhealthy, and the fail-open reason says why.
    let new = backend("127.0.0.4:2");
    let f = checker.filter("web", &config, 1, &[up.clone(), down.clone(), new]);
    assert_eq!((f.unhealthy, f.unchecked), (2, 1));
    let reason = f.fail_open.unwrap();
    assert!(reason.ends_with(", 1 not checked yet"), "{reason}");
    drop(listener);
}

#[tokio::test]
async fn a_decisive_start_up_lets_the_first_probe_decide() {
    let listener = TcpListener::bind("127.0.0.5:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let up = backend(&format!("127.0.0.5:{port}"));
    let config =
        parse("{ tcp: {}, rise: 5, interval: 100ms, timeout: 100ms, startup: decisive }").unwrap();
    let mut checker = Checker::new();
    let mut events = checker.start().unwrap();
    checker.set_targets("web", Some(&config), std::slice::from_ref(&up));
    let event = events.recv().await.unwrap();
    assert!(event.healthy);
    assert_eq!(checker.health("web", &up).unwrap().passes, 1);
    // A backend that joins later is not part of the start-up round: it waits for `rise`.
    let listener2 = TcpListener::bind("127.0.0.5:0").await.unwrap();
    let later = backend(&format!(
        "127.0.0.5:{}",
        listener2.local_addr().unwrap().port()
    ));
    checker.set_targets("web", Some(&config), &[up.clone(), later.clone()]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let state = checker.health("web", &later).unwrap();
    assert!(state.probed && !state.healthy, "{state:?}");
    drop((listener, listener2));
}

#[tokio::test]
async fn a_probe_that_times_out_closes_its_connection() {
    let listener = TcpListener::bind("127.0.0.6:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let c = parse("{ http: {}, timeout: 100ms }").unwrap();
    let target = c.target(&backend("127.0.0.6:1").address, port);
    let mut session = Session::new(Some(std::sync::Arc::new(tokio::sync::Semaphore::new(1))));
    let (result, accepted) = tokio::join!(c.probe(&target, &mut session), listener.accept());
    assert_eq!(result.unwrap_err(), "no answer within 100ms");
    // The backend sees the request, then the end of the connection: nothing is left open.
    let (mut stream, _) = accepted.unwrap();
    let mut seen = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut seen)).await;
    assert!(read.is_ok(), "the probe's socket is still open");
    assert!(seen.starts_with(b"GET / HTTP/1.1\r\n"), "{seen:?}");
}

/// A keep-alive HTTP/1.1 backend: answers `200 ok` to each request on a connection until the
/// client asks to close (or, with `drop_idle`, closes each connection after one answer without
/// saying so, as a keep-alive timeout does). Counts connections and requests.
async fn keep_alive(
    listener: TcpListener,
    counts: std::sync::Arc<[std::sync::atomic::AtomicUsize; 2]>,
    drop_idle: bool,
) {
    use std::sync::atomic::Ordering::SeqCst;
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        counts[0].fetch_add(1, SeqCst);
        let counts = std::sync::Arc::clone(&counts);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut seen = Vec::new();
            loop {
                while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
                    seen.drain(..end + 4);
                    counts[1].fetch_add(1, SeqCst);
                    let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if stream.write_all(reply).await.is_err()
                        || drop_idle
                        || head.contains("connection: close")
                    {
                        return;
                    }
                }
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
        });
    }
}

#[tokio::test]
async fn a_passing_connection_carries_the_next_probes_up_to_its_limit() {
    use std::sync::atomic::Ordering::SeqCst;
    let listener = TcpListener::bind("127.0.0.7:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let counts = std::sync::Arc::new(Default::default());
    let server = tokio::spawn(keep_alive(listener, std::sync::Arc::clone(&counts), false));
    let budget = std::sync::Arc::new(tokio::sync::Semaphore::new(4));
    let c = parse("http: {}").unwrap();
    let target = c.target(&backend("127.0.0.7:1").address, port);
    let mut session = Session::new(Some(std::sync::Arc::clone(&budget)));
    let probes = 2 * http::MAX_REQUESTS_PER_CONNECTION + 3;
    for _ in 0..probes {
        assert_eq!(c.probe(&target, &mut session).await, Ok(()));
    }
    // Three connections: two carried the limit, the third is open and holds a permit.
    assert_eq!(counts[1].load(SeqCst), probes as usize);
    assert_eq!(counts[0].load(SeqCst), 3);
    assert_eq!(budget.available_permits(), 3);
    drop(session);
    assert_eq!(budget.available_permits(), 4);
    // Without a budget (one-shot probes) or with `reuse_connection: false`, each probe connects.
    let before = counts[0].load(SeqCst);
    let off = parse("http: { reuse_connection: false }").unwrap();
    let mut session = Session::new(Some(std::sync::Arc::clone(&budget)));
    for (config, session) in [(&c, &mut Session::default()), (&off, &mut session)] {
        for _ in 0..3 {
            assert_eq!(config.probe(&target, session).await, Ok(()));
        }
    }
    assert_eq!(counts[0].load(SeqCst) - before, 6);
    assert_eq!(budget.available_permits(), 4);
    server.abort();
}

#[tokio::test]
async fn a_spent_budget_still_probes_and_is_said_once() {
    use std::sync::atomic::Ordering::SeqCst;
    let listener = TcpListener::bind("127.0.0.9:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let counts = std::sync::Arc::new(Default::default());
    let server = tokio::spawn(keep_alive(listener, std::sync::Arc::clone(&counts), false));
    let c = parse("http: {}").unwrap();
    let target = c.target(&backend("127.0.0.9:1").address, port);
    // No permit left: every probe passes on a connection of its own.
    let mut session = Session::new(Some(std::sync::Arc::new(tokio::sync::Semaphore::new(0))));
    for _ in 0..3 {
        assert_eq!(c.probe(&target, &mut session).await, Ok(()));
    }
    assert_eq!(counts[0].load(SeqCst), 3);
    assert!(super::BUDGET_SPENT_SAID.load(SeqCst));
    server.abort();
}

#[tokio::test]
async fn a_kept_connection_the_backend_closed_is_not_a_failure() {
    use std::sync::atomic::Ordering::SeqCst;
    let listener = TcpListener::bind("127.0.0.8:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let counts = std::sync::Arc::new(Default::default());
    let server = tokio::spawn(keep_alive(listener, std::sync::Arc::clone(&counts), true));
    let c = parse("http: {}").unwrap();
    let target = c.target(&backend("127.0.0.8:1").address, port);
    let mut session = Session::new(Some(std::sync::Arc::new(tokio::sync::Semaphore::new(1))));
    for _ in 0..5 {
        // Give the close time to arrive, as an idle keep-alive timeout would.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(c.probe(&target, &mut session).await, Ok(()));
    }
    assert_eq!(counts[0].load(SeqCst), 5);
    server.abort();
}

#[tokio::test]
async fn a_backend_that_accepts_no_new_connections_fails_within_the_reuse_limit() {
    let listener = TcpListener::bind("127.0.0.9:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let counts = std::sync::Arc::new(Default::default());
    let server = tokio::spawn(keep_alive(listener, counts, false));
    let c = parse("{ http: {}, timeout: 200ms }").unwrap();
    let target = c.target(&backend("127.0.0.9:1").address, port);
    let mut session = Session::new(Some(std::sync::Arc::new(tokio::sync::Semaphore::new(1))));
    assert_eq!(c.probe(&target, &mut session).await, Ok(()));
    // The listener goes (the accept loop ends with the task) while the open connection's own
    // task goes on answering on it.
    server.abort();
    let _ = server.await;
    let mut passes = 0;
    loop {
        match c.probe(&target, &mut session).await {
            Ok(()) => passes += 1,
            Err(e) => {
                assert!(e.starts_with("connect failed"), "{e}");
                break;
            }
        }
        assert!(passes < http::MAX_REQUESTS_PER_CONNECTION, "never failed");
    }
    assert_eq!(passes, http::MAX_REQUESTS_PER_CONNECTION - 1);
    // After a failure each probe connects anew.
    assert!(c.probe(&target, &mut session).await.is_err());
}

/// Answers every request on a connection with `answer` as it is (closing after it when
/// `close`); counts connections and keeps the requests' bytes.
async fn canned(
    listener: TcpListener,
    answer: &'static [u8],
    close: bool,
    seen: std::sync::Arc<std::sync::Mutex<(usize, Vec<u8>)>>,
) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        seen.lock().unwrap().0 += 1;
        let seen = std::sync::Arc::clone(&seen);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut pending = Vec::new();
            loop {
                while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                    seen.lock()
                        .unwrap()
                        .1
                        .extend_from_slice(&pending[..end + 4]);
                    pending.drain(..end + 4);
                    if stream.write_all(answer).await.is_err() || close {
                        return;
                    }
                }
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                }
            }
        });
    }
}

#[tokio::test]
async fn answers_are_framed_by_length_chunks_or_close_and_reused_only_when_they_can_be() {
    type Seen = std::sync::Arc<std::sync::Mutex<(usize, Vec<u8>)>>;
    // (answer, close after it, probe, expected result, connections for three probes)
    type Case = (
        &'static [u8],
        bool,
        &'static str,
        Result<(), &'static str>,
        usize,
    );
    let big: &'static [u8] = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{}",
        http::MAX_BODY_BYTES + 1,
        "x".repeat(http::MAX_BODY_BYTES + 1)
    )
    .into_bytes()
    .leak();
    let cases: [Case; 8] = [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nstat\r\n6\r\nus: up\r\n0\r\nX-Trailer: 1\r\n\r\n",
            false,
            "http: { expect_body: \"status: up\" }",
            Ok(()),
            1,
        ),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            false,
            "http: {}",
            Ok(()),
            1,
        ),
        (
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
            true,
            "http: { expect_body: ok }",
            Ok(()),
            3,
        ),
        (
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nup to the end",
            true,
            "http: { expect_body: the end }",
            Ok(()),
            3,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",
            false,
            "http: {}",
            Ok(()),
            3,
        ),
        (
            big,
            false,
            "http: { expect_body: x }",
            Err("reading the body failed: it is over 65536 bytes"),
            3,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            false,
            "http: { expect_body: x }",
            Err("reading the body failed: a chunk size is not a hexadecimal number"),
            3,
        ),
        (
            b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
            false,
            "http: {}",
            Err("not an HTTP answer: invalid HTTP version"),
            3,
        ),
    ];
    for (answer, close, probe, expected, connections) in cases {
        let listener = TcpListener::bind("127.0.0.11:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Seen = Default::default();
        let server = tokio::spawn(canned(
            listener,
            answer,
            close,
            std::sync::Arc::clone(&seen),
        ));
        let c = parse(probe).unwrap();
        let target = c.target(&backend("127.0.0.11:1").address, port);
        let budget = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
        let mut session = Session::new(Some(budget));
        for _ in 0..3 {
            let result = c.probe(&target, &mut session).await;
            assert_eq!(
                result.as_ref().map(|_| ()).map_err(String::as_str),
                expected,
                "{probe}"
            );
        }
        assert_eq!(seen.lock().unwrap().0, connections, "{probe}: connections");
        server.abort();
    }
}

#[tokio::test]
async fn the_request_is_written_once_per_backend_with_its_headers() {
    let listener = TcpListener::bind("127.0.0.11:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: std::sync::Arc<std::sync::Mutex<(usize, Vec<u8>)>> = Default::default();
    let answer: &'static [u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    let server = tokio::spawn(canned(
        listener,
        answer,
        false,
        std::sync::Arc::clone(&seen),
    ));
    let c = parse("http: { path: \"/ready?deep=1\", method: HEAD, host: svc.example, headers: { X-Probe: yes } }").unwrap();
    let target = c.target(&backend("127.0.0.11:1").address, port);
    let mut session = Session::new(Some(std::sync::Arc::new(tokio::sync::Semaphore::new(1))));
    for _ in 0..http::MAX_REQUESTS_PER_CONNECTION {
        assert_eq!(c.probe(&target, &mut session).await, Ok(()));
    }
    let text = String::from_utf8(seen.lock().unwrap().1.clone()).unwrap();
    let ua = concat!("User-Agent: elasticd-health/", env!("CARGO_PKG_VERSION"));
    let keep =
        format!("HEAD /ready?deep=1 HTTP/1.1\r\nHost: svc.example\r\n{ua}\r\nx-probe: yes\r\n\r\n");
    let last = keep.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
    let n = http::MAX_REQUESTS_PER_CONNECTION as usize;
    assert_eq!(text, keep.repeat(n - 1) + &last);
    // One connection carried them all, and the last said so.
    assert_eq!(seen.lock().unwrap().0, 1);
    server.abort();
}

#[test]
fn probes_fall_due_on_ticks_of_a_hundredth_of_the_wait() {
    let epoch = tokio::time::Instant::now();
    let at = |ms: u64| epoch + Duration::from_millis(ms);
    let wait = Duration::from_secs(2);
    // 2 s: ticks of 20 ms; a time on a tick stays, any other moves to the next one.
    assert_eq!(checker::on_tick(epoch, at(40), wait), at(40));
    assert_eq!(checker::on_tick(epoch, at(41), wait), at(60));
    assert_eq!(checker::on_tick(epoch, at(59), wait), at(60));
    // 200 ms: ticks of 2 ms; a minute: never coarser than 20 ms; 50 ms: never finer than 1 ms.
    assert_eq!(checker::on_tick(epoch, at(41), wait / 10), at(42));
    assert_eq!(checker::on_tick(epoch, at(41), wait * 30), at(60));
    let half = epoch + Duration::from_micros(1500);
    assert_eq!(
        checker::on_tick(epoch, half, Duration::from_millis(50)),
        at(2)
    );
}
