//! Fleet mode end to end: several `elasticd run` daemons with the same `cluster:` and a real etcd
//! (Debian's `etcd-server`) on loopback. The shared locator is an `exec` plugin that appends its
//! member's name to a counter file on every run, so that the tests see exactly who polled.
#![cfg(feature = "etcd")]

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::etcd::{Etcd, get};
use support::{Group, Test, free_port, targets_json, wait_until};

/// The fleet's shared files: the backends the "cloud" returns and the counter of locator runs.
struct Cloud {
    dir: Test,
}

impl Cloud {
    fn new(ips: &[&str]) -> Cloud {
        let cloud = Cloud { dir: Test::new() };
        cloud.set(ips);
        cloud.dir.write("runs", "");
        // One plugin at one path for every member, as a packaged plugin would be: the backends'
        // `source` is then the same whoever ran it.
        cloud.dir.write_executable(
            "locate",
            &format!(
                "#!/bin/sh\necho \"$FLEET_MEMBER\" >> {runs}\ncat {backends}\n",
                runs = cloud.path("runs").display(),
                backends = cloud.path("backends.json").display(),
            ),
        );
        cloud
    }

    fn set(&self, ips: &[&str]) {
        // Written whole and renamed, so that a plugin never reads half a file.
        self.dir.write("backends.tmp", &targets_json(ips));
        std::fs::rename(
            self.dir.join("backends.tmp"),
            self.dir.join("backends.json"),
        )
        .unwrap();
    }

    /// Who ran the locator, one line per run.
    fn runs(&self) -> Vec<String> {
        self.dir.read("runs").lines().map(str::to_string).collect()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// One member: its own directory, config and plugin, and its operations server's port.
struct Member {
    name: String,
    dir: Test,
    port: u16,
    daemon: Option<Group>,
}

impl Member {
    fn new(name: &str, etcd: &Etcd, cloud: &Cloud, fallback: &str) -> Member {
        Member::with_entry(name, etcd, cloud, fallback, "")
    }

    /// A member whose locator entry has `entry` (lines like `\n        shared: false`) beside
    /// its kind.
    fn with_entry(name: &str, etcd: &Etcd, cloud: &Cloud, fallback: &str, entry: &str) -> Member {
        let dir = Test::new();
        let port = free_port();
        dir.write(
            "config.yaml",
            &member_config(name, port, etcd, cloud, fallback, entry),
        );
        let mut member = Member {
            name: name.to_string(),
            dir,
            port,
            daemon: None,
        };
        member.start();
        member
    }

    fn start(&mut self) {
        let run = ["run", "--config", "config.yaml", "--log", "debug"];
        let cmd = self.dir.elasticd(run).env("FLEET_MEMBER", &self.name);
        self.daemon = Some(cmd.daemon());
    }

    fn rendered(&self) -> String {
        std::fs::read_to_string(self.dir.join("upstream.conf")).unwrap_or_default()
    }

    fn log(&self) -> String {
        self.daemon.as_ref().map(Group::log).unwrap_or_default()
    }

    fn readyz(&self) -> (u16, String) {
        get(self.port, "/readyz").unwrap_or((0, String::new()))
    }

    fn status(&self) -> serde_json::Value {
        let (_, body) = get(self.port, "/api/v1/status").unwrap_or_default();
        serde_json::from_str(&body).unwrap_or_default()
    }
}

fn member_config(
    name: &str,
    port: u16,
    etcd: &Etcd,
    cloud: &Cloud,
    fallback: &str,
    entry: &str,
) -> String {
    format!(
        r#"environment: test
daemon: {{ settle_min: 100ms, settle_max: 500ms, jitter: 0, backoff_max: 2s }}
server: {{ listen: ["127.0.0.1:{port}"] }}
cluster:
  name: edge
  member: {name}
  lease_ttl: 3s
  fallback_after: {fallback}
  share: [exec]
  etcd: {{ endpoints: {endpoints}, dial_timeout: 1s }}
services:
  web:
    refresh: 1s
    port: 8080
    locators:
      - exec: {{ command: ["{plugin}"], pass_env: [FLEET_MEMBER] }}{entry}
outputs:
  - {{ template: "builtin:nginx", path: upstream.conf, vars: {{ service: web }} }}
"#,
        endpoints = etcd.endpoints_yaml(),
        plugin = cloud.path("locate").display(),
    )
}

fn logs(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| format!("--- {} ---\n{}", m.name, m.log()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn wait_all_render(members: &[Member], what: &str, want: &str, limit: Duration) {
    wait_until(
        what,
        limit,
        || logs(members),
        || members.iter().all(|m| m.rendered().contains(want)),
    );
}

fn fleet(etcd: &Etcd, cloud: &Cloud, n: usize, fallback: &str) -> Vec<Member> {
    ["a", "b", "c", "d"][..n]
        .iter()
        .map(|name| Member::new(name, etcd, cloud, fallback))
        .collect()
}

/// For the record (docs/operations.md): from the leader's log line publishing revision 2 to
/// each follower's log line applying it, in milliseconds.
fn propagation(members: &[Member], leader: &str) -> Vec<i64> {
    let at = |log: &str, needle: &str| {
        let line = log.lines().find(|l| l.contains(needle))?;
        let stamp = line.split_whitespace().next()?;
        chrono::DateTime::parse_from_rfc3339(stamp).ok()
    };
    let leader = members.iter().find(|m| m.name == leader).unwrap();
    let Some(published) = at(&leader.log(), "revision 2") else {
        return Vec::new();
    };
    members
        .iter()
        .filter(|m| m.name != leader.name)
        .filter_map(|m| at(&m.log(), "applied web +1/-0 (2 backends)"))
        .map(|applied| (applied - published).num_milliseconds())
        .collect()
}

/// The members that ran the locator, in order of first run.
fn pollers(cloud: &Cloud) -> Vec<String> {
    let mut seen = Vec::new();
    for who in cloud.runs() {
        if !seen.contains(&who) {
            seen.push(who);
        }
    }
    seen
}

#[test]
fn one_member_polls_and_every_member_renders_its_set() {
    let etcd = Etcd::start(1);
    let cloud = Cloud::new(&["127.0.0.1"]);
    let members = fleet(&etcd, &cloud, 3, "never");
    wait_all_render(
        &members,
        "the first set everywhere",
        "127.0.0.1:8080",
        Duration::from_secs(20),
    );
    cloud.set(&["127.0.0.1", "127.0.0.2"]);
    wait_all_render(
        &members,
        "the change everywhere",
        "127.0.0.2:8080",
        Duration::from_secs(10),
    );
    // Several refreshes later, still one poller, polling on its schedule.
    std::thread::sleep(Duration::from_secs(3));
    let who = pollers(&cloud);
    eprintln!("propagation: {:?}", propagation(&members, &who[0]));
    assert_eq!(who.len(), 1, "runs by {who:?}\n{}", logs(&members));
    assert!(cloud.runs().len() >= 4, "{:?}", cloud.runs());
    // The leader polled several times since it published the change, and wrote nothing more.
    let key = format!(
        "{}/data",
        members[0].status()["fleet"][0]["key"].as_str().unwrap()
    );
    let written = etcd.mod_revision(&key).expect("the data key");
    assert!(etcd.keys("/elasticd/fleets/").contains(&key), "{key}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        etcd.mod_revision(&key),
        Some(written),
        "an unchanged set was rewritten"
    );
    let files: Vec<String> = members.iter().map(Member::rendered).collect();
    assert!(files.iter().all(|f| *f == files[0]), "{files:?}");
    // The status names the leader, the same on every member, and every member is ready.
    for m in &members {
        let status = m.status();
        let fleet = &status["fleet"][0];
        assert_eq!(fleet["leader"], who[0].as_str(), "{status}");
        let role = if m.name == who[0] {
            "leader"
        } else {
            "follower"
        };
        assert_eq!(fleet["role"], role, "{status}");
        // The status page says the same, for people.
        let (_, page) = get(m.port, "/").unwrap();
        let leader_cell = format!(r#"<td class="leader" data-label="leader">{}</td>"#, who[0]);
        assert!(page.contains(&leader_cell), "{leader_cell} in\n{page}");
        let role_cell = format!(r#"<td class="role" data-label="this member">{role}</td>"#);
        assert!(page.contains(&role_cell), "{role_cell} in\n{page}");
        assert_eq!(m.readyz().0, 200, "{:?}", m.readyz());
        let (_, metrics) = get(m.port, "/metrics").unwrap();
        let leading = u8::from(m.name == who[0]);
        let gauge =
            format!("elasticd_fleet_leader{{service=\"web\",locator=\"0:exec\"}} {leading}");
        assert!(metrics.contains(&gauge), "{gauge} in\n{metrics}");
        let result = if leading == 1 { "won" } else { "lost" };
        assert!(
            metrics.contains(&format!(
                "elasticd_fleet_elections_total{{result=\"{result}\"}}"
            )),
            "{metrics}"
        );
    }
}

#[test]
fn killing_the_leader_hands_over_within_the_lease_ttl() {
    let mut etcd = Etcd::start(3);
    let cloud = Cloud::new(&["127.0.0.1"]);
    let mut members = fleet(&etcd, &cloud, 3, "never");
    wait_all_render(
        &members,
        "the first set",
        "127.0.0.1:8080",
        Duration::from_secs(20),
    );
    // One etcd member down, quorum kept (it is the first endpoint every member knows): nothing
    // changes.
    etcd.stop_member(0);
    cloud.set(&["127.0.0.2"]);
    wait_all_render(
        &members,
        "a change with one etcd member down",
        "127.0.0.2:8080",
        Duration::from_secs(10),
    );
    assert_eq!(pollers(&cloud).len(), 1, "{:?}", cloud.runs());
    for m in &members {
        assert_eq!(m.readyz().0, 200, "{} {:?}", m.name, m.readyz());
    }
    let leader = pollers(&cloud)[0].clone();
    let i = members.iter().position(|m| m.name == leader).unwrap();
    // SIGKILL: no lease revocation, etcd has to expire it (lease_ttl 3s).
    members[i].daemon = None;
    let dead = members.remove(i);
    let before = cloud.runs().len();
    let killed = std::time::Instant::now();
    cloud.set(&["127.0.0.3"]);
    // lease_ttl + one refresh + settle, with room for a slow machine.
    wait_all_render(
        &members,
        "the new leader's set",
        "127.0.0.3:8080",
        Duration::from_secs(10),
    );
    // For the record (docs/operations.md), not asserted beyond the wait above.
    eprintln!(
        "handover: new set everywhere {:?} after the kill",
        killed.elapsed()
    );
    let after: Vec<String> = cloud.runs()[before..].to_vec();
    assert!(
        !after.is_empty() && after.iter().all(|w| *w != leader),
        "{after:?}"
    );
    let new = &after[0];
    assert!(
        after.iter().all(|w| w == new),
        "one new poller: {after:?}\n{}",
        logs(&members)
    );
    drop(dead);

    // A second etcd member down: no quorum. Followers keep their set and report degraded.
    etcd.stop_member(1);
    cloud.set(&["127.0.0.9"]);
    wait_until(
        "degraded without quorum",
        Duration::from_secs(15),
        || logs(&members),
        || {
            members
                .iter()
                .all(|m| m.readyz().1.contains("fleet_degraded"))
        },
    );
    // The leader may have polled once more before it noticed (and used what it found itself);
    // the followers can't have seen it.
    let last = cloud.runs().last().cloned().unwrap();
    for m in members.iter().filter(|m| m.name != last) {
        assert!(m.rendered().contains("127.0.0.3:8080"), "{}", m.rendered());
    }
    etcd.start_stopped();
    wait_all_render(
        &members,
        "the set once quorum is back",
        "127.0.0.9:8080",
        Duration::from_secs(20),
    );
}

#[test]
fn without_etcd_the_last_good_set_stays_and_readiness_says_degraded() {
    let mut etcd = Etcd::start(1);
    let cloud = Cloud::new(&["127.0.0.1"]);
    let mut members = fleet(&etcd, &cloud, 2, "never");
    wait_all_render(
        &members,
        "the first set",
        "127.0.0.1:8080",
        Duration::from_secs(20),
    );
    etcd.stop_all();
    cloud.set(&["127.0.0.4"]);
    wait_until(
        "degraded readiness",
        Duration::from_secs(15),
        || logs(&members),
        || {
            members.iter().all(|m| {
                let (code, body) = m.readyz();
                code == 503 && body.contains("fleet_degraded")
            })
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    for m in &mut members {
        m.daemon.as_mut().unwrap().assert_running("etcd down");
        assert!(m.rendered().contains("127.0.0.1:8080"), "{}", m.rendered());
    }
    // `fallback_after: never`: while etcd is down only the leader may still have polled; the
    // followers never did.
    let who = pollers(&cloud);
    assert_eq!(who.len(), 1, "{who:?}");

    etcd.start_stopped();
    wait_all_render(
        &members,
        "the set after etcd is back",
        "127.0.0.4:8080",
        Duration::from_secs(20),
    );
    wait_until(
        "ready again",
        Duration::from_secs(10),
        || logs(&members),
        || members.iter().all(|m| m.readyz().0 == 200),
    );
}

#[test]
fn after_fallback_after_followers_poll_directly_until_etcd_returns() {
    let mut etcd = Etcd::start(1);
    let cloud = Cloud::new(&["127.0.0.1"]);
    let members = fleet(&etcd, &cloud, 2, "2s");
    wait_all_render(
        &members,
        "the first set",
        "127.0.0.1:8080",
        Duration::from_secs(20),
    );
    assert_eq!(pollers(&cloud).len(), 1);
    etcd.stop_all();
    cloud.set(&["127.0.0.5"]);
    wait_all_render(
        &members,
        "the set found directly",
        "127.0.0.5:8080",
        Duration::from_secs(20),
    );
    assert_eq!(pollers(&cloud).len(), 2, "both polled: {:?}", cloud.runs());
    etcd.start_stopped();
    std::thread::sleep(Duration::from_secs(5));
    let before = cloud.runs().len();
    std::thread::sleep(Duration::from_secs(3));
    let after: Vec<String> = cloud.runs()[before..].to_vec();
    let mut who = after.clone();
    who.dedup();
    assert_eq!(
        who.len(),
        1,
        "one poller again: {after:?}\n{}",
        logs(&members)
    );
}

#[test]
fn the_whole_fleet_restarts_without_manual_cleanup() {
    let etcd = Etcd::start(1);
    let cloud = Cloud::new(&["127.0.0.1"]);
    let mut members = fleet(&etcd, &cloud, 3, "never");
    wait_all_render(
        &members,
        "the first set",
        "127.0.0.1:8080",
        Duration::from_secs(20),
    );
    // A crash of everyone at once: the old leader's key is still in etcd when they come back.
    for m in &mut members {
        m.daemon = None;
    }
    cloud.set(&["127.0.0.6"]);
    for m in &mut members {
        m.start();
    }
    wait_all_render(
        &members,
        "the set after a crash",
        "127.0.0.6:8080",
        Duration::from_secs(15),
    );
    // A clean stop of everyone: leadership is handed back at once.
    for m in &mut members {
        assert_eq!(m.daemon.take().unwrap().stop(), Some(0), "{}", m.log());
    }
    cloud.set(&["127.0.0.7"]);
    for m in &mut members {
        m.start();
    }
    wait_all_render(
        &members,
        "the set after a restart",
        "127.0.0.7:8080",
        Duration::from_secs(15),
    );
    let before = cloud.runs().len();
    std::thread::sleep(Duration::from_secs(3));
    let mut who: Vec<String> = cloud.runs()[before..].to_vec();
    who.sort();
    who.dedup();
    assert_eq!(who.len(), 1, "{who:?}\n{}", logs(&members));
}

#[test]
fn a_member_that_joins_after_a_handover_gets_the_unchanged_set() {
    let etcd = Etcd::start(1);
    let cloud = Cloud::new(&["127.0.0.1"]);
    let mut members = fleet(&etcd, &cloud, 2, "never");
    wait_all_render(
        &members,
        "the first set",
        "127.0.0.1:8080",
        Duration::from_secs(20),
    );
    let leader = pollers(&cloud)[0].clone();
    let i = members.iter().position(|m| m.name == leader).unwrap();
    // Killed: its data key expires with its lease, though the new leader finds the same set.
    members.remove(i);
    wait_until(
        "a new leader",
        Duration::from_secs(15),
        || logs(&members),
        || pollers(&cloud).len() == 2,
    );
    std::thread::sleep(Duration::from_secs(2));
    members.push(Member::new("d", &etcd, &cloud, "never"));
    wait_all_render(
        &members,
        "the set on the new member",
        "127.0.0.1:8080",
        Duration::from_secs(10),
    );
    assert_eq!(pollers(&cloud).len(), 2, "{:?}", cloud.runs());
}

/// A record in the format of schema 1 (what elasticd wrote before schema 2), with `ips` on port
/// 8080, as such a leader would publish it.
fn record_v1(revision: u64, leader: &str, ips: &[&str]) -> String {
    let backends: Vec<String> = ips
        .iter()
        .map(|ip| format!(r#"{{"address":"{ip}","port":8080,"weight":1}}"#))
        .collect();
    format!(
        r#"{{"schema":1,"revision":{revision},"generated_at":"2026-12-01T23:00:00.000Z","leader":"{leader}","backends":[{}]}}"#,
        backends.join(",")
    )
}

#[test]
fn a_follower_reads_the_previous_schema_and_refuses_an_unknown_one() {
    let etcd = Etcd::start(1);
    let cloud = Cloud::new(&["127.0.0.1"]);
    let mut a = Member::new("a", &etcd, &cloud, "never");
    wait_all_render(
        std::slice::from_ref(&a),
        "the first set",
        "127.0.0.1:8080",
        Duration::from_secs(20),
    );
    let dir = a.status()["fleet"][0]["key"]
        .as_str()
        .expect("the fleet key")
        .to_string();
    // A clean stop revokes the lease: the keys go, and an older elasticd takes the lead.
    assert_eq!(a.daemon.take().unwrap().stop(), Some(0), "{}", a.log());
    let lease = etcd.grant(120);
    let old = "elasticd-previous";
    etcd.put(&format!("{dir}/leader"), old, Some(&lease));
    let data = format!("{dir}/data");
    etcd.put(&data, &record_v1(4, old, &["127.0.0.11"]), Some(&lease));
    let runs = cloud.runs().len();
    a.start();
    wait_all_render(
        std::slice::from_ref(&a),
        "the previous schema's set",
        "127.0.0.11:8080",
        Duration::from_secs(15),
    );
    let status = a.status();
    assert_eq!(status["fleet"][0]["leader"], old, "{status}");
    assert_eq!(status["fleet"][0]["role"], "follower", "{status}");
    assert_eq!(status["fleet"][0]["revision"], 4, "{status}");
    assert_eq!(a.readyz().0, 200, "{:?}", a.readyz());

    // A version from the future: refused, said once in plain words, the last good set kept.
    let future = record_v1(5, old, &["127.0.0.12"])
        .replace(r#""schema":1,"#, r#""schema":3,"weights":"v3","#);
    etcd.put(&data, &future, Some(&lease));
    wait_until(
        "the refusal of schema 3",
        Duration::from_secs(10),
        || a.log(),
        || {
            a.log().contains(
                "fleet: the published record has schema 3, this elasticd reads 1 to 2; run the \
                 same or an adjacent version on every member; keeping the last good set",
            )
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    let rendered = a.rendered();
    assert!(rendered.contains("127.0.0.11:8080"), "{rendered}");
    assert!(!rendered.contains("127.0.0.12"), "{rendered}");
    assert_eq!(a.status()["fleet"][0]["revision"], 4);

    // The current schema: a set whose leader's locator has stopped answering for over 3
    // refreshes is kept, but no longer counts as current.
    let failing = record_v1(6, old, &["127.0.0.11"]).replace(
        r#""schema":1,"#,
        r#""schema":2,"failing":{"since":"2026-01-01T00:00:00.000Z","error":"DescribeInstances: throttled"},"#,
    );
    etcd.put(&data, &failing, Some(&lease));
    wait_until(
        "degraded by an unconfirmed set",
        Duration::from_secs(10),
        || a.log(),
        || a.readyz().1.contains("fleet_degraded"),
    );
    assert!(a.readyz().1.contains("throttled"), "{:?}", a.readyz());
    assert!(a.rendered().contains("127.0.0.11:8080"), "{}", a.rendered());
    // The leader answers again (in schema 1, as the oldest format that holds it).
    etcd.put(&data, &record_v1(7, old, &["127.0.0.13"]), Some(&lease));
    wait_all_render(
        std::slice::from_ref(&a),
        "the set after the leader recovered",
        "127.0.0.13:8080",
        Duration::from_secs(10),
    );
    wait_until(
        "ready again",
        Duration::from_secs(10),
        || a.log(),
        || a.readyz().0 == 200,
    );
    assert_eq!(cloud.runs().len(), runs, "a follower never polls");
}

#[test]
fn a_locator_marked_shared_false_runs_on_every_member() {
    let etcd = Etcd::start(1);
    let cloud = Cloud::new(&["127.0.0.1"]);
    let local = "\n        shared: false";
    let members: Vec<Member> = ["a", "b"]
        .iter()
        .map(|name| Member::with_entry(name, &etcd, &cloud, "never", local))
        .collect();
    wait_all_render(
        &members,
        "the set everywhere",
        "127.0.0.1:8080",
        Duration::from_secs(20),
    );
    // `exec` is in `cluster.share`, but this entry is host-local: each member asks its own
    // plugin, and nothing of it is in etcd.
    wait_until(
        "both members running the locator",
        Duration::from_secs(10),
        || format!("{:?}\n{}", cloud.runs(), logs(&members)),
        || pollers(&cloud).len() == 2,
    );
    for m in &members {
        let status = m.status();
        assert_eq!(status["fleet"], serde_json::json!([]), "{status}");
        assert_eq!(m.readyz().0, 200, "{:?}", m.readyz());
    }
    assert_eq!(etcd.keys("/elasticd/fleets/"), Vec::<String>::new());
    // A value that is not a yes or no is refused where it is written.
    let t = Test::new();
    let port = free_port();
    let bad = "\n        shared: sometimes";
    t.write(
        "config.yaml",
        &member_config("c", port, &etcd, &cloud, "never", bad),
    );
    let check = t.elasticd(["check", "--config", "config.yaml"]).run();
    assert_ne!(check.code, 0, "{}", check.stdout);
    assert!(
        check
            .stderr
            .contains("config.yaml:17:17: service `web`: `shared` must be `true`"),
        "{}",
        check.stderr
    );
}
