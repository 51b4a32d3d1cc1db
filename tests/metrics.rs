//! `GET /metrics` of a running daemon, fetched with a real HTTP client, parsed with a Prometheus
//! text-format parser (the `prometheus-parse` crate) and linted by Prometheus's own `promtool`,
//! and checked against what happened: the reload, check, locate, guard and hook counts equal the
//! counts the test's own scripts kept in marker files. The example alert rules in
//! `docs/alerts.yml` pass `promtool check rules` and their unit tests, and name only metrics the
//! binary exports. With the `aws` feature, `elasticd_cloud_api_calls_total` counts the
//! DescribeInstances requests sent to a local AWS emulator.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use prometheus_parse::{Sample, Scrape, Value};
use support::{Group, Test, free_port, program, targets_json, wait_until};

/// `elasticd run` as every test here starts it.
const RUN: [&str; 5] = ["run", "--config", "config.yaml", "--log", "debug"];

/// The whole exposition of the daemon listening on `port`, or why there is none.
fn try_fetch(port: u16) -> Result<String, ureq::Error> {
    ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
        .call()?
        .body_mut()
        .read_to_string()
}

/// The whole exposition of the daemon listening on `port`.
fn fetch(port: u16) -> String {
    try_fetch(port).unwrap_or_else(|e| panic!("GET /metrics: {e}"))
}

/// The exposition, parsed.
fn scrape(port: u16) -> Scrape {
    parse(&fetch(port))
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("a Prometheus exposition")
}

/// The value of the sample `name` whose labels include `labels`; 0 when there is none (a
/// counter nobody has incremented yet has no series).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .collect();
    assert!(found.len() <= 1, "{name} {labels:?} matches {found:?}");
    found.first().map_or(0.0, |s| match s.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        _ => panic!("{name} is not a plain number: {:?}", s.value),
    })
}

/// Waits until `cond` holds for a fresh scrape; panics with the daemon's log and the last
/// scrape otherwise.
fn wait_metrics(daemon: &Group, port: u16, what: &str, mut cond: impl FnMut(&Scrape) -> bool) {
    wait_until(
        what,
        Duration::from_secs(20),
        || format!("{}\n---\n{:?}", daemon.log(), try_fetch(port)),
        // Until the daemon listens, there is nothing to scrape.
        || try_fetch(port).is_ok_and(|text| cond(&parse(&text))),
    );
}

/// Prometheus's own parser and linter on the exposition (`promtool check metrics`).
fn promtool_accepts(text: &str) {
    let mut child = Command::new(program("promtool", "prometheus"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool exits");
    // promtool lints in the Prometheus text format, where a counter's HELP names the sample
    // (`x_total`); in OpenMetrics, which elasticd serves and Prometheus scrapes, it names the
    // family (`x`). That one difference is all it may report.
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let only_naming = report.lines().all(|l| {
        l.strip_suffix("_total no help text")
            .is_some_and(|family| text.contains(&format!("# HELP {family} ")))
    });
    assert!(
        out.status.success() || only_naming,
        "promtool check metrics: {report}\n---\n{text}"
    );
}

/// One service `web` found by `locator` on `refresh: 1s`, one frontend `fe` with `frontend`
/// settings, and the operations server on `port`.
fn config(port: u16, locator: &str, guard: &str, frontend: &str) -> String {
    format!(
        r#"daemon: {{ settle_min: 100ms, settle_max: 500ms, jitter: 0, backoff_max: 2s }}
server: {{ listen: ["127.0.0.1:{port}"] }}
services:
  web:
    refresh: 1s
    port: 8080
    locators: [{locator}]
    guard: {{ {guard} }}
    on_change: [exec: [./hook.sh]]
frontends:
  fe: {{ {frontend} }}
outputs:
  - {{ template: "builtin:nginx", path: upstream.conf, frontend: fe, vars: {{ service: web }} }}
"#
    )
}

/// Counts each run of a check or reload in marker files: `NAME` gets a line per run, and
/// `NAME-failures` a line per failed run (the run fails while the file `NAME-broken` exists).
fn counted(name: &str) -> String {
    format!(
        "[sh, -c, \"echo run >> {name}; if test -e {name}-broken; then echo x >> {name}-failures; exit 1; fi\"]"
    )
}

const HOOK: &str = "#!/bin/sh\ncat > /dev/null\necho ok >> hooks\n";

#[test]
fn reloads_renders_checks_and_hooks_are_counted_as_they_happen() {
    let port = free_port();
    let t = Test::new()
        .executable("hook.sh", HOOK)
        .file("backends.json", &targets_json(&["127.0.0.1"]))
        .file(
            "config.yaml",
            &config(
                port,
                "file: { path: backends.json }",
                "min_backends: 1",
                &format!(
                    "check: {}, reload: {{ command: {} }}",
                    counted("checks"),
                    counted("reloads")
                ),
            ),
        );
    let daemon = t.elasticd(RUN).daemon();
    daemon.wait_for("the first reload", Duration::from_secs(15), || {
        t.lines("reloads") == 1
    });

    // Three more changes, each a reload.
    for n in 2..=4 {
        let ips: Vec<String> = (1..=n).map(|i| format!("127.0.0.{i}")).collect();
        t.write("backends.json", &targets_json(&ips));
        daemon.wait_for("the change's reload", Duration::from_secs(15), || {
            t.lines("reloads") == n
        });
    }
    let reload_ok = [
        ("frontend", "fe"),
        ("method", "command"),
        ("result", "success"),
    ];
    wait_metrics(&daemon, port, "4 reloads counted", |s| {
        value(s, "elasticd_reloads_total", &reload_ok) == 4.0
    });
    wait_metrics(&daemon, port, "4 hook runs counted", |s| {
        value(
            s,
            "elasticd_hook_runs_total",
            &[("service", "web"), ("result", "success")],
        ) == t.lines("hooks") as f64
            && t.lines("hooks") == 4
    });
    let text = fetch(port);
    promtool_accepts(&text);
    let s = parse(&text);
    let output = t.join("upstream.conf").display().to_string();
    let written = [("output", output.as_str()), ("result", "written")];
    assert_eq!(value(&s, "elasticd_renders_total", &written), 4.0, "{text}");
    assert_eq!(
        value(&s, "elasticd_last_reload_success", &[("frontend", "fe")]),
        1.0
    );
    assert_eq!(
        value(&s, "elasticd_check_failures_total", &[]),
        0.0,
        "{text}"
    );
    assert_eq!(value(&s, "elasticd_backends", &[("service", "web")]), 4.0);
    assert_eq!(value(&s, "elasticd_config_last_reload_success", &[]), 1.0);
    let build = s
        .samples
        .iter()
        .find(|s| s.metric == "elasticd_build_info")
        .unwrap_or_else(|| panic!("no build_info in\n{text}"));
    assert_eq!(build.labels.get("version"), Some(env!("CARGO_PKG_VERSION")));
    assert!(build.labels.get("features").is_some(), "{build:?}");

    // A failing check: the files go back, nothing is reloaded, each failed run is counted.
    t.write("checks-broken", "");
    t.write("backends.json", &targets_json(&["127.0.0.9"]));
    daemon.wait_for("two failed checks", Duration::from_secs(15), || {
        t.lines("checks-failures") >= 2
    });
    std::fs::remove_file(t.join("checks-broken")).unwrap();
    daemon.wait_for("the reload after the fix", Duration::from_secs(15), || {
        t.lines("reloads") == 5
    });
    wait_metrics(&daemon, port, "the check failures counted", |s| {
        value(s, "elasticd_check_failures_total", &[("frontend", "fe")])
            == t.lines("checks-failures") as f64
            && value(s, "elasticd_reloads_total", &reload_ok) == 5.0
    });

    // A failing reload: each try counted as a failure, and the frontend's gauge says so.
    t.write("reloads-broken", "");
    t.write("backends.json", &targets_json(&["127.0.0.10"]));
    let reload_failed = [
        ("frontend", "fe"),
        ("method", "command"),
        ("result", "failure"),
    ];
    wait_metrics(&daemon, port, "a failed reload", |s| {
        value(s, "elasticd_last_reload_success", &[("frontend", "fe")]) == 0.0
            && value(s, "elasticd_reloads_total", &reload_failed) >= 2.0
    });
    std::fs::remove_file(t.join("reloads-broken")).unwrap();
    wait_metrics(&daemon, port, "recovery", |s| {
        value(s, "elasticd_last_reload_success", &[("frontend", "fe")]) == 1.0
    });
    let s = scrape(port);
    let failures = t.lines("reloads-failures") as f64;
    assert_eq!(
        value(&s, "elasticd_reloads_total", &reload_failed),
        failures
    );
    assert_eq!(
        value(&s, "elasticd_reloads_total", &reload_ok) + failures,
        t.lines("reloads") as f64,
        "every run of the reload command is counted once:\n{}",
        daemon.log()
    );
    assert_eq!(daemon.stop(), Some(0));
}

/// A locator plugin that answers with `small` (one backend) while the file `small` exists, and
/// fails while `down` exists; each run is counted in `runs`, failed ones in `failed`, and small
/// answers in `small-answers`.
const PLUGIN: &str = r#"#!/bin/sh
cat > /dev/null
echo run >> runs
if [ -e down ]; then echo x >> failed; echo 'inventory API down' >&2; exit 1; fi
if [ -e small ]; then
  echo x >> small-answers
  echo '[{"targets": ["127.0.0.1:80"]}]'
else
  echo '[{"targets": ["127.0.0.1:80", "127.0.0.2:80", "127.0.0.3:80", "127.0.0.4:80"]}]'
fi
"#;

/// A daemon on `port` whose service is located by [`PLUGIN`] behind `guard`, once it has
/// reloaded for the first time.
fn start_with_plugin(port: u16, guard: &str) -> (Test, Group) {
    let t = Test::new()
        .executable("hook.sh", HOOK)
        .executable("plugin.sh", PLUGIN)
        .file(
            "config.yaml",
            &config(
                port,
                "exec: { command: [./plugin.sh], timeout: 5s }",
                guard,
                "reload: { command: [sh, -c, \"echo run >> reloads\"] }",
            ),
        );
    let daemon = t.elasticd(RUN).daemon();
    daemon.wait_for("the first reload", Duration::from_secs(15), || {
        t.lines("reloads") == 1
    });
    (t, daemon)
}

#[test]
fn locator_failures_and_guard_holds_are_counted_with_their_reason() {
    let port = free_port();
    let (t, daemon) = start_with_plugin(port, "min_backends: 2, max_removed_ratio: 0.5");
    let locator = [("service", "web"), ("locator", "0:exec")];

    // The locator fails a few times, then recovers.
    t.write("down", "");
    daemon.wait_for("two failed locates", Duration::from_secs(15), || {
        t.lines("failed") >= 2
    });
    std::fs::remove_file(t.join("down")).unwrap();
    let runs = t.lines("runs");
    daemon.wait_for("a good locate again", Duration::from_secs(15), || {
        t.lines("runs") > runs + 1
    });
    let s = scrape(port);
    assert_eq!(
        value(&s, "elasticd_locate_failures_total", &locator),
        t.lines("failed") as f64,
        "{}",
        fetch(port)
    );
    assert!(
        value(
            &s,
            "elasticd_locate_last_success_timestamp_seconds",
            &locator
        ) > 1e9
    );
    let count = |s: &Scrape| {
        s.samples
            .iter()
            .filter(|x| x.metric == "elasticd_locate_duration_seconds")
            .map(|x| match &x.value {
                Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
                other => panic!("not a histogram: {other:?}"),
            })
            .sum::<f64>()
    };
    assert_eq!(count(&s), t.lines("runs") as f64, "each run is observed");

    // One backend left of four: both limits hold; min_backends is the one reported.
    t.write("small", "");
    daemon.wait_for("two small answers", Duration::from_secs(15), || {
        t.lines("small-answers") >= 2
    });
    std::fs::remove_file(t.join("small")).unwrap();
    let runs = t.lines("runs");
    daemon.wait_for("a full answer again", Duration::from_secs(15), || {
        t.lines("runs") > runs + 1
    });
    let s = scrape(port);
    let held = |reason: &str| {
        value(
            &s,
            "elasticd_guard_held_total",
            &[("service", "web"), ("reason", reason)],
        )
    };
    assert_eq!(held("min_backends"), t.lines("small-answers") as f64);
    assert_eq!(held("max_removed_ratio"), 0.0);
    assert_eq!(
        t.lines("reloads"),
        1,
        "nothing the guard refused was applied"
    );
    assert_eq!(daemon.stop(), Some(0));

    // max_removed_ratio alone: two of four is allowed at 0.5, one of four is not.
    let (t2, daemon) = start_with_plugin(port, "min_backends: 1, max_removed_ratio: 0.5");
    t2.write("small", "");
    let reason = [("service", "web"), ("reason", "max_removed_ratio")];
    wait_metrics(&daemon, port, "the ratio guard", |s| {
        value(s, "elasticd_guard_held_total", &reason) >= 1.0
    });
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn readiness_is_exported_and_follows_the_daemon() {
    let port = free_port();
    let t = Test::new()
        .executable("hook.sh", HOOK)
        .file("backends.json", "{ not json")
        .file(
            "config.yaml",
            &config(
                port,
                "file: { path: backends.json }",
                "min_backends: 1",
                "reload: { command: [sh, -c, \"echo run >> reloads\"] }",
            ),
        );
    let daemon = t.elasticd(RUN).daemon();
    wait_metrics(&daemon, port, "a failed locate", |s| {
        value(s, "elasticd_locate_failures_total", &[("service", "web")]) >= 1.0
    });
    assert_eq!(value(&scrape(port), "elasticd_ready", &[]), 0.0);
    t.write("backends.json", &targets_json(&["127.0.0.1"]));
    wait_metrics(&daemon, port, "ready", |s| {
        value(s, "elasticd_ready", &[]) == 1.0
    });
    assert_eq!(daemon.stop(), Some(0));
}

/// Every `elasticd_*` name in `text` (a rule expression).
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("elasticd_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

/// The sample names a family of `kind` exposes.
fn sample_names(family: &str, kind: &str) -> Vec<String> {
    match kind {
        "counter" => vec![format!("{family}_total")],
        "histogram" => ["_bucket", "_sum", "_count"]
            .iter()
            .map(|s| format!("{family}{s}"))
            .collect(),
        _ => vec![family.to_string()],
    }
}

#[test]
fn the_example_alert_rules_are_valid_fire_as_meant_and_name_exported_metrics() {
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/alerts.yml");
    let promtool = program("promtool", "prometheus");
    for args in [
        vec!["check", "rules", rules],
        vec![
            "test",
            "rules",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/alerts_test.yml"),
        ],
    ] {
        let out = Command::new(&promtool).args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // What the binary exports, from the TYPE lines of a live daemon's /metrics.
    let port = free_port();
    let t = Test::new()
        .executable("hook.sh", HOOK)
        .file("backends.json", &targets_json(&["127.0.0.1"]))
        .file(
            "config.yaml",
            &config(
                port,
                "file: { path: backends.json }",
                "min_backends: 1",
                "reload: { command: [\"true\"] }",
            ),
        );
    let daemon = t.elasticd(RUN).daemon();
    wait_metrics(&daemon, port, "the first reload", |s| {
        value(s, "elasticd_last_reload_success", &[("frontend", "fe")]) == 1.0
    });
    let text = fetch(port);
    assert_eq!(daemon.stop(), Some(0));
    let exported: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .flat_map(|(family, kind)| sample_names(family, kind))
        .collect();
    assert!(exported.len() > 10, "{text}");
    let yaml = std::fs::read_to_string(rules).unwrap();
    let used = metric_names(&yaml);
    assert!(used.len() >= 4, "the rules use elasticd metrics: {used:?}");
    for name in used {
        assert!(
            exported.contains(&name),
            "docs/alerts.yml uses {name}, which elasticd does not export: {exported:?}"
        );
    }
}

#[cfg(feature = "aws")]
mod aws {
    use super::*;
    use support::moto::{Moto, REGION, SdkClients};
    use support::moto_server::offline_aws_env;

    /// The `api_calls=N` of every `DescribeInstances done` line in a debug log.
    fn logged_calls(log: &str) -> f64 {
        log.lines()
            .filter(|l| l.contains("DescribeInstances done"))
            .filter_map(|l| l.split("api_calls=").nth(1))
            .filter_map(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .sum()
    }

    #[test]
    fn cloud_api_calls_count_describe_instances_requests() {
        let dir = Test::new();
        let mut moto = Moto::start(dir.path());
        moto.clients().run(3, &[("role", "web")], None);
        let port = free_port();
        dir.write(
            "config.yaml",
            &format!(
                r#"aws: {{ region: {REGION}, endpoint_url: "http://127.0.0.1:{moto}", max_attempts: 2, connect_timeout: 1s, attempt_timeout: 5s, operation_timeout: 15s }}
daemon: {{ backoff_max: 2s }}
server: {{ listen: ["127.0.0.1:{port}"] }}
services:
  web:
    refresh: 1s
    port: 8080
    locators: [ec2: {{ filters: {{ "tag:role": web }} }}]
outputs:
  - {{ template: "builtin:nginx", path: upstream.conf, vars: {{ service: web }} }}
"#,
                moto = moto.port
            ),
        );
        let mut cmd = dir.elasticd(RUN);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("AWS_") {
                cmd = cmd.env_remove(&key);
            }
        }
        let daemon = cmd.envs(offline_aws_env(dir.path())).daemon();
        let ok = [
            ("api", "ec2"),
            ("operation", "DescribeInstances"),
            ("result", "success"),
        ];
        wait_metrics(&daemon, port, "three locates", |s| {
            value(s, "elasticd_cloud_api_calls_total", &ok) >= 3.0
        });
        // The log line comes after the calls; poll until both agree.
        wait_metrics(&daemon, port, "the count to match the log", |s| {
            value(s, "elasticd_cloud_api_calls_total", &ok) == logged_calls(&daemon.log())
        });

        // No emulator: every attempt (max_attempts: 2) fails on the wire.
        moto.kill();
        let refused = [
            ("api", "ec2"),
            ("operation", "DescribeInstances"),
            ("result", "transport_error"),
        ];
        wait_metrics(&daemon, port, "both attempts of a failed locate", |s| {
            value(s, "elasticd_cloud_api_calls_total", &refused) >= 2.0
                && value(s, "elasticd_locate_failures_total", &[("locator", "0:ec2")]) >= 1.0
        });
        assert_eq!(daemon.stop(), Some(0));
    }
}
