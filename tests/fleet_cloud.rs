//! Fleet mode at scale, against real parts: a 3-member etcd cluster (Debian's `etcd-server`),
//! moto as the cloud, and 20 `elasticd run` processes sharing one `ec2` locator.
//!
//! The instances carry their (loopback) address in a tag, which the locator reads: nothing
//! connects to the 10.x addresses moto hands out, and moto is reached on 127.0.0.1 only.
#![cfg(all(feature = "etcd", feature = "aws"))]

mod support;

use std::time::{Duration, Instant};

use support::etcd::{Etcd, get};
use support::moto::{Moto, REGION, SdkClients, Seeder};
use support::moto_server::offline_aws_env;
use support::{Group, Test, free_port, wait_until};

/// The fleet at its largest.
const MEMBERS: usize = 20;

/// The service's refresh period, and so the leader's polling period.
const REFRESH: Duration = Duration::from_secs(1);

struct Member {
    name: String,
    dir: Test,
    port: u16,
    daemon: Option<Group>,
}

impl Member {
    fn new(name: &str, etcd: &Etcd, moto: &Moto) -> Member {
        let dir = Test::new();
        let port = free_port();
        dir.write(
            "config.yaml",
            &format!(
                r#"environment: test
aws: {{ region: {REGION}, endpoint_url: "http://127.0.0.1:{moto}", max_attempts: 2, connect_timeout: 1s, attempt_timeout: 5s, operation_timeout: 15s }}
daemon: {{ settle_min: 100ms, settle_max: 500ms, jitter: 0, backoff_max: 2s }}
server: {{ listen: ["127.0.0.1:{port}"] }}
cluster:
  name: edge
  member: {name}
  lease_ttl: 3s
  fallback_after: never
  etcd: {{ endpoints: {endpoints}, dial_timeout: 1s }}
services:
  web:
    refresh: {refresh}s
    port: 8080
    locators: [ec2: {{ filters: {{ "tag:role": web }}, address: "tag:lb-address" }}]
outputs:
  - {{ template: "builtin:nginx", path: upstream.conf, vars: {{ service: web }} }}
"#,
                moto = moto.port,
                endpoints = etcd.endpoints_yaml(),
                refresh = REFRESH.as_secs(),
            ),
        );
        let mut cmd = dir.elasticd(["run", "--config", "config.yaml"]);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("AWS_") {
                cmd = cmd.env_remove(&key);
            }
        }
        let daemon = cmd.envs(offline_aws_env(dir.path())).daemon();
        Member {
            name: name.to_string(),
            dir,
            port,
            daemon: Some(daemon),
        }
    }

    fn rendered(&self) -> String {
        std::fs::read_to_string(self.dir.join("upstream.conf")).unwrap_or_default()
    }

    /// `elasticd_cloud_api_calls_total` summed over its labels (0 before the first call).
    fn api_calls(&self) -> f64 {
        let (_, metrics) = get(self.port, "/metrics").unwrap_or_default();
        metrics
            .lines()
            .filter(|l| l.starts_with("elasticd_cloud_api_calls_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn log(&self) -> String {
        self.daemon.as_ref().map(Group::log).unwrap_or_default()
    }
}

fn logs(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| format!("--- {} ---\n{}", m.name, m.log()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn wait_all_render(members: &[Member], what: &str, want: &[&str], limit: Duration) {
    wait_until(
        what,
        limit,
        || logs(members),
        || {
            members.iter().all(|m| {
                let file = m.rendered();
                want.iter().all(|w| file.contains(&format!("{w}:8080")))
            })
        },
    );
}

/// The cloud API calls of the whole fleet over `periods` refresh periods, and who made them.
fn calls_over(members: &[Member], periods: u32) -> (f64, Vec<String>) {
    let before: Vec<f64> = members.iter().map(Member::api_calls).collect();
    std::thread::sleep(REFRESH * periods);
    let mut total = 0.0;
    let mut callers = Vec::new();
    for (m, b) in members.iter().zip(before) {
        let made = m.api_calls() - b;
        if made > 0.0 {
            callers.push(m.name.clone());
        }
        total += made;
    }
    (total, callers)
}

fn launch(aws: &Seeder, address: &str) -> Vec<String> {
    aws.run(
        1,
        &[
            ("role", "web"),
            ("Environment", "test"),
            ("lb-address", address),
        ],
        None,
    )
}

#[test]
fn twenty_daemons_make_the_api_calls_of_one() {
    let dir = Test::new();
    let mut etcd = Etcd::start(3);
    let moto = Moto::start(dir.path());
    let aws = moto.clients();
    launch(&aws, "127.0.0.1");
    let second = launch(&aws, "127.0.0.2");

    // One host: what it costs without anybody to share with.
    let mut members = vec![Member::new("m00", &etcd, &moto)];
    wait_all_render(
        &members,
        "the first member's set",
        &["127.0.0.1", "127.0.0.2"],
        Duration::from_secs(30),
    );
    const PERIODS: u32 = 4;
    let (alone, _) = calls_over(&members, PERIODS);
    assert!(
        alone >= f64::from(PERIODS - 1),
        "{alone} calls in {PERIODS}s"
    );

    // The fleet grows; its calls stay those of one host, all made by one member.
    for size in [5, 10, MEMBERS] {
        let started = Instant::now();
        while members.len() < size {
            let name = format!("m{:02}", members.len());
            members.push(Member::new(&name, &etcd, &moto));
        }
        wait_all_render(
            &members,
            &format!("the set on {size} members"),
            &["127.0.0.1", "127.0.0.2"],
            Duration::from_secs(60),
        );
        let (calls, callers) = calls_over(&members, PERIODS);
        eprintln!(
            "{size} members: {calls} API calls in {PERIODS} refresh periods by {callers:?} \
             (alone: {alone}); all rendered {:?} after the first start",
            started.elapsed()
        );
        assert_eq!(callers.len(), 1, "one poller: {callers:?}");
        assert!(
            calls <= alone + 1.0,
            "{size} members made {calls} calls, one host {alone}"
        );
        let files: Vec<String> = members.iter().map(Member::rendered).collect();
        assert!(files.iter().all(|f| *f == files[0]), "one file everywhere");
    }

    // A change in the cloud reaches every follower, with one etcd member down.
    etcd.stop_member(0);
    aws.terminate(&second);
    launch(&aws, "127.0.0.3");
    let changed = Instant::now();
    wait_all_render(
        &members,
        "the change on every member",
        &["127.0.0.1", "127.0.0.3"],
        Duration::from_secs(20),
    );
    assert!(members.iter().all(|m| !m.rendered().contains("127.0.0.2:")));
    eprintln!(
        "a change in moto on {MEMBERS} members after {:?}",
        changed.elapsed()
    );

    // kill -9 the leader: a new one publishes within lease_ttl (3s) and a refresh.
    let (_, callers) = calls_over(&members, 2);
    let i = members.iter().position(|m| m.name == callers[0]).unwrap();
    let dead = members.remove(i);
    drop(dead);
    let killed = Instant::now();
    launch(&aws, "127.0.0.4");
    wait_all_render(
        &members,
        "the new leader's set",
        &["127.0.0.1", "127.0.0.3", "127.0.0.4"],
        Duration::from_secs(20),
    );
    eprintln!(
        "the new leader's set everywhere {:?} after the kill",
        killed.elapsed()
    );
    let (calls, callers) = calls_over(&members, PERIODS);
    assert_eq!(callers.len(), 1, "one new poller: {callers:?}");
    assert!(calls <= alone + 1.0, "{calls} calls after the handover");
}
