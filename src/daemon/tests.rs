//! The event loop driven in-process on a paused clock: the settle window and refresh requests
//! without sleeping for real. `tests/daemon.rs` covers the same loop through the binary, with
//! real signals.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::sleep;

use super::{Control, run};
use crate::config;
use crate::engine::Engine;

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    fn new(settle_min: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "daemon: {{ settle_min: {settle_min}, settle_max: 5s, jitter: 0 }}
services:
  web:
    refresh: 1h
    port: 80
    locators: [file: {{ path: backends.json }}]
outputs:
  - template: builtin:nginx
    path: out.conf
    vars: {{ service: web }}
"
            ),
        )
        .unwrap();
        let setup = Setup { dir, config };
        setup.backends(&["127.0.0.1"]);
        setup
    }

    fn backends(&self, ips: &[&str]) {
        let targets: Vec<String> = ips.iter().map(|ip| format!("\"{ip}:80\"")).collect();
        let doc = format!("[{{\"targets\": [{}]}}]", targets.join(", "));
        std::fs::write(self.dir.path().join("backends.json"), doc).unwrap();
    }

    fn output(&self) -> Option<String> {
        std::fs::read_to_string(self.path("out.conf")).ok()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn start(&self) -> (mpsc::Sender<Control>, tokio::task::JoinHandle<()>) {
        let engine = Engine::new(config::load(&self.config).unwrap())
            .unwrap_or_else(|_| panic!("templates of {} do not compile", self.config.display()));
        let (tx, rx) = mpsc::channel(4);
        let path = self.config.clone();
        let handle = tokio::spawn(async move { run(path, engine, rx).await.unwrap() });
        (tx, handle)
    }
}

/// The endpoints of the `server` lines of an nginx upstream.
fn servers(text: Option<String>) -> Vec<String> {
    text.unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("server "))
        .filter_map(|l| l.split([' ', ';']).next())
        .map(str::to_string)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_first_answer_waits_for_the_settle_window() {
    let setup = Setup::new("2s");
    let (tx, handle) = setup.start();
    sleep(Duration::from_millis(1500)).await;
    assert!(
        !setup.path("out.conf").exists(),
        "written before settle_min"
    );
    sleep(Duration::from_millis(1000)).await;
    assert_eq!(servers(setup.output()), ["127.0.0.1:80"]);
    tx.send(Control::Stop).await.unwrap();
    handle.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_changes_is_applied_once_after_the_last_one_settles() {
    let setup = Setup::new("2s");
    let (tx, handle) = setup.start();
    sleep(Duration::from_secs(3)).await;
    assert_eq!(servers(setup.output()), ["127.0.0.1:80"]);
    // Three changes a second apart: each pushes the deadline, none is applied on its own.
    for ips in [
        &["127.0.0.2"][..],
        &["127.0.0.2", "127.0.0.3"],
        &["127.0.0.4"],
    ] {
        setup.backends(ips);
        tx.send(Control::Refresh).await.unwrap();
        sleep(Duration::from_secs(1)).await;
        assert_eq!(servers(setup.output()), ["127.0.0.1:80"]);
    }
    sleep(Duration::from_millis(1500)).await;
    assert_eq!(servers(setup.output()), ["127.0.0.4:80"]);
    tx.send(Control::Stop).await.unwrap();
    handle.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn changes_that_never_stop_are_applied_by_settle_max() {
    let setup = Setup::new("2s");
    let (tx, handle) = setup.start();
    sleep(Duration::from_secs(3)).await;
    let mut seen = vec![servers(setup.output())];
    // A change every second for eight seconds: settle_min never passes quietly, settle_max (5s
    // after the first change) applies what is known then.
    for i in 2..10 {
        setup.backends(&[&format!("127.0.0.{i}")]);
        tx.send(Control::Refresh).await.unwrap();
        sleep(Duration::from_secs(1)).await;
        seen.push(servers(setup.output()));
    }
    seen.dedup();
    assert_eq!(
        seen,
        [vec!["127.0.0.1:80"], vec!["127.0.0.6:80"]],
        "one apply in the middle of the burst"
    );
    sleep(Duration::from_secs(3)).await;
    assert_eq!(servers(setup.output()), ["127.0.0.9:80"]);
    tx.send(Control::Stop).await.unwrap();
    handle.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_closed_control_channel_stops_the_daemon() {
    let setup = Setup::new("2s");
    let (tx, handle) = setup.start();
    drop(tx);
    tokio::time::timeout(Duration::from_secs(60), handle)
        .await
        .expect("the daemon did not stop")
        .unwrap();
}

#[test]
fn the_applied_line_names_the_first_endpoints_then_counts_the_rest() {
    use crate::backend::{Backend, parse_target};
    let set = |targets: &[&str]| -> Vec<Backend> {
        targets
            .iter()
            .map(|t| {
                let (address, port) = parse_target(t).unwrap();
                Backend::new(address, port.unwrap())
            })
            .collect()
    };
    // The `applied` line of service `web` moving from `old` (none: unknown) to `new`.
    let summary = |old: Option<&[Backend]>, new: &[Backend]| -> String {
        let shared = |s: &[Backend]| std::sync::Arc::new(s.to_vec());
        let before: indexmap::IndexMap<String, _> = old
            .map(|o| ("web".to_string(), shared(o)))
            .into_iter()
            .collect();
        let sets = indexmap::IndexMap::from([("web".to_string(), shared(new))]);
        let moved = super::moved::moved_sets(&before, &sets);
        assert_eq!(moved.len(), 1);
        super::moved::change_summary(&moved[0])
    };
    let before = set(&["10.0.0.1:80", "10.0.0.2:80"]);
    let after = set(&["10.0.0.2:80", "[::1]:80"]);
    assert_eq!(
        summary(Some(&before), &after),
        "web +1/-1 (2 backends) [+[::1]:80 -10.0.0.1:80]"
    );
    let many: Vec<String> = (1..=8).map(|i| format!("10.0.1.{i}:80")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(
        summary(Some(&before[..1]), &set(&many)),
        "web +8/-1 (8 backends) [+10.0.1.1:80 +10.0.1.2:80 +10.0.1.3:80 +10.0.1.4:80 \
         +10.0.1.5:80 and 4 more]"
    );
    assert_eq!(
        summary(None, &before[..1]),
        "web +1/-0 (1 backend) [+10.0.0.1:80]"
    );
    let unchanged = indexmap::IndexMap::from([("web".to_string(), std::sync::Arc::new(after))]);
    assert!(super::moved::moved_sets(&unchanged, &unchanged.clone()).is_empty());
}

#[test]
fn only_unmodified_read_only_mappings_of_the_program_are_released() {
    let smaps = "\
5600-5700 r--p 00000000 08:01 12 /usr/bin/elasticd
Rss: 100 kB
Anonymous: 0 kB
5700-5900 r-xp 00100000 08:01 12 /usr/bin/elasticd
Anonymous: 0 kB
5900-5a00 r--p 00300000 08:01 12 /usr/bin/elasticd
Anonymous: 12 kB
5a00-5b00 rw-p 00400000 08:01 12 /usr/bin/elasticd
Anonymous: 0 kB
7f00-7f10 r-xp 00000000 08:01 40 /usr/lib/libc.so.6
Anonymous: 0 kB
7f10-7f20 rw-p 00000000 00:00 0
Anonymous: 4 kB
";
    let found =
        super::memory::unmodified_mappings(smaps, std::path::Path::new("/usr/bin/elasticd"));
    assert_eq!(found, [(0x5600, 0x5700), (0x5700, 0x5900)]);
}

#[test]
fn free_pages_go_back_once_applies_stop() {
    let start = tokio::time::Instant::now();
    let mut trim = super::memory::Trim::default();
    assert_eq!(
        trim.deadline(),
        None,
        "nothing to give back before an apply"
    );
    trim.applied(start);
    assert_eq!(trim.deadline(), Some(start + super::memory::TRIM_AFTER));
    // Another apply before then keeps the pages for longer.
    let later = start + Duration::from_secs(5);
    trim.applied(later);
    assert_eq!(trim.deadline(), Some(later + super::memory::TRIM_AFTER));
    trim.now();
    assert_eq!(
        trim.deadline(),
        None,
        "given back once, until the next apply"
    );
}
