//! The `ec2` and `asg` locators against a real AWS API emulator (moto), through the real
//! `elasticd` binary: filters and environment scoping, instance states, missing addresses,
//! pagination with a count of API calls, Auto Scaling lifecycle and health, missing groups,
//! the emulator dying mid-run, credentials and region errors, and one rendered HAProxy file that
//! the real `haproxy -c` accepts.
//!
//! Each test starts its own `moto_server` on a free loopback port (see `support/moto.rs`).
#![cfg(feature = "aws")]

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::moto::{Moto, REGION, SdkClients};
use support::moto_server::offline_aws_env;
use support::{Cmd, Output, Test, program};

/// Runs elasticd with dummy credentials, no AWS settings from the caller's environment, and
/// instance metadata disabled (so nothing is ever sent to 169.254.169.254); `env` on top, an
/// empty value removing the variable.
fn elasticd(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Cmd::new(dir).args(args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AWS_") {
            cmd = cmd.env_remove(&key);
        }
    }
    cmd = cmd.envs(offline_aws_env(dir));
    for (k, v) in env {
        cmd = if v.is_empty() {
            cmd.env_remove(k)
        } else {
            cmd.env(k, v)
        };
    }
    cmd.run()
}

/// The `aws` section for a moto on `port`: few attempts and short timeouts, so that a dead
/// emulator fails a run in seconds.
fn aws_section(port: u16) -> String {
    format!(
        "aws: {{ region: {REGION}, endpoint_url: \"http://127.0.0.1:{port}\", max_attempts: 2, \
         connect_timeout: 1s, attempt_timeout: 5s, operation_timeout: 15s }}\n"
    )
}

/// A config with one service `web` found by `locator` (a YAML flow node).
fn config(dir: &Path, moto: &Moto, environment: Option<&str>, locator: &str) {
    let env = environment
        .map(|e| format!("environment: {e}\n"))
        .unwrap_or_default();
    let text = format!(
        "{env}{aws}state_file: state.json
services:
  web:
    port: 8080
    locators:
      - {locator}
    guard: {{ min_backends: 0 }}
outputs: []
",
        aws = aws_section(moto.port)
    );
    std::fs::write(dir.join("config.yaml"), text).expect("write config");
}

/// `elasticd locate --json` for service `web`: its backends.
fn locate(dir: &Path) -> Vec<Value> {
    let run = elasticd(
        dir,
        &["locate", "--config", "config.yaml", "--json", "web"],
        &[],
    )
    .success();
    let found: Value = serde_json::from_str(&run.stdout).expect("locate --json prints JSON");
    found["web"].as_array().cloned().unwrap_or_default()
}

fn field(backends: &[Value], key: &str) -> Vec<String> {
    let mut v: Vec<String> = backends
        .iter()
        .map(|b| b[key].as_str().unwrap_or_default().to_string())
        .collect();
    v.sort();
    v
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

fn tmp() -> Test {
    Test::new()
}

#[test]
fn ec2_tag_filters_with_wildcards_and_environment_scoping() {
    let dir = tmp();
    let moto = Moto::start(dir.path());
    let aws = moto.clients();
    let web = aws.run(2, &[("role", "web"), ("Environment", "production")], None);
    let canary = aws.run(
        1,
        &[
            ("role", "web-canary"),
            ("Environment", "production"),
            ("Name", "canary-1"),
        ],
        None,
    );
    aws.run(2, &[("role", "web"), ("Environment", "staging")], None);
    aws.run(1, &[("role", "api"), ("Environment", "production")], None);
    aws.run(1, &[("role", "web")], None);

    // Production sees its own web and web-canary hosts, never staging's or untagged ones.
    config(
        dir.path(),
        &moto,
        Some("production"),
        r#"ec2: { filters: { "tag:role": ["web*"] } }"#,
    );
    let found = locate(dir.path());
    let mut want = [web.clone(), canary.clone()].concat();
    want.sort();
    assert_eq!(field(&found, "id"), want);

    // Every backend carries its metadata.
    let b = found
        .iter()
        .find(|b| b["id"] == canary[0].as_str())
        .expect("canary");
    assert_eq!(b["port"], 8080);
    assert_eq!(b["name"], "canary-1");
    assert_eq!(b["zone"], "us-east-1a");
    assert_eq!(b["tags"]["role"], "web-canary");
    assert_eq!(b["meta"]["instance_type"], "t3.micro");
    assert_eq!(b["meta"]["state"], "running");
    assert!(
        b["meta"]["vpc_id"]
            .as_str()
            .is_some_and(|v| v.starts_with("vpc-"))
    );
    assert!(
        b["meta"]["subnet_id"]
            .as_str()
            .is_some_and(|v| v.starts_with("subnet-"))
    );
    assert!(b["address"].as_str().is_some_and(|a| a.starts_with("10.")));

    // An exact filter, and staging scoped by its own environment.
    config(
        dir.path(),
        &moto,
        Some("staging"),
        r#"ec2: { filters: { "tag:role": web } }"#,
    );
    assert_eq!(locate(dir.path()).len(), 2);

    // Without an environment there is no scoping: every `role=web` host.
    config(
        dir.path(),
        &moto,
        None,
        r#"ec2: { filters: { "tag:role": web } }"#,
    );
    assert_eq!(locate(dir.path()).len(), 5);

    // Scoping can use another tag key, or be turned off.
    config(
        dir.path(),
        &moto,
        Some("web-canary"),
        r#"ec2: { filters: { "tag:Environment": production }, environment_tag: role }"#,
    );
    assert_eq!(field(&locate(dir.path()), "id"), canary);
    config(
        dir.path(),
        &moto,
        Some("production"),
        r#"ec2: { filters: { "tag:role": web }, environment_tag: ~ }"#,
    );
    assert_eq!(locate(dir.path()).len(), 5);
}

#[test]
fn stopped_and_terminated_instances_are_left_out() {
    let dir = tmp();
    let moto = Moto::start(dir.path());
    let aws = moto.clients();
    let ids = aws.run(4, &[("role", "web")], None);
    aws.stop(&ids[0..1]);
    aws.terminate(&ids[1..2]);

    config(
        dir.path(),
        &moto,
        None,
        r#"ec2: { filters: { "tag:role": web } }"#,
    );
    assert_eq!(field(&locate(dir.path()), "id"), sorted(ids[2..].to_vec()));

    config(
        dir.path(),
        &moto,
        None,
        r#"ec2: { filters: { "tag:role": web }, states: [running, stopped] }"#,
    );
    let found = locate(dir.path());
    assert_eq!(found.len(), 3);
    let stopped = found
        .iter()
        .find(|b| b["id"] == ids[0].as_str())
        .expect("stopped one");
    assert_eq!(stopped["meta"]["state"], "stopped");
}

#[test]
fn instances_without_the_address_are_skipped_with_a_warning() {
    let dir = tmp();
    let moto = Moto::start(dir.path());
    let aws = moto.clients();
    let public = aws.run(1, &[("role", "web")], None);
    let subnet = aws.private_subnet();
    let private = aws.run(1, &[("role", "web"), ("Name", "db-1")], Some(&subnet));

    config(
        dir.path(),
        &moto,
        None,
        r#"ec2: { filters: { "tag:role": web }, address: public_ip }"#,
    );
    let run = elasticd(
        dir.path(),
        &["locate", "--config", "config.yaml", "--json"],
        &[],
    )
    .success();
    let found: Value = serde_json::from_str(&run.stdout).expect("JSON");
    let found = found["web"].as_array().cloned().unwrap_or_default();
    assert_eq!(field(&found, "id"), public);
    let warning = format!("{} (db-1): no public IP address", private[0]);
    assert!(run.stderr.contains("WARN"), "{}", run.stderr);
    assert!(run.stderr.contains(&warning), "{}", run.stderr);

    // The address can come from a tag (how traffic tests point at loopback); the port too.
    let tagged = aws.run(
        1,
        &[
            ("role", "lb-test"),
            ("lb-address", "127.0.0.7"),
            ("lb-port", "9001"),
            ("lb-weight", "5"),
        ],
        None,
    );
    aws.run(1, &[("role", "lb-test")], None);
    config(
        dir.path(),
        &moto,
        None,
        r#"ec2: { filters: { "tag:role": lb-test }, address: "tag:lb-address", port_tag: lb-port, weight_tag: lb-weight }"#,
    );
    let found = locate(dir.path());
    assert_eq!(field(&found, "id"), tagged);
    assert_eq!(found[0]["address"], "127.0.0.7");
    assert_eq!(found[0]["port"], 9001);
    assert_eq!(found[0]["weight"], 5);
}

/// The `api_calls=N` a debug log line reports for the last locator run.
fn api_calls(stderr: &str) -> u64 {
    stderr
        .lines()
        .filter_map(|l| l.split("api_calls=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no api_calls in the debug log:\n{stderr}"))
}

#[test]
fn more_than_a_thousand_instances_cost_one_call_per_thousand() {
    let dir = tmp();
    let moto = Moto::start(dir.path());
    let aws = moto.clients();
    // Addresses from a tag, unique by construction: moto's random private ones sometimes
    // collide among 1,250 instances, and two instances at one address are one backend.
    let seeded = aws.run_each_addressed(1250, &[("role", "web")], "ip");
    assert_eq!(seeded.len(), 1250);
    let ids: Vec<String> = seeded.iter().map(|(id, _)| id.clone()).collect();
    let addresses: Vec<String> = seeded.iter().map(|(_, a)| a.clone()).collect();

    config(
        dir.path(),
        &moto,
        None,
        r#"ec2: { filters: { "tag:role": web }, address: "tag:ip" }"#,
    );
    // A page of 1,000 tagged instances can take moto well over the usual 5s on a busy machine,
    // and a timed-out attempt would be retried: a third call. The service's locate timeout
    // (30s by default) must not cut the two pages short either.
    let path = dir.path().join("config.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(
            "attempt_timeout: 5s, operation_timeout: 15s",
            "attempt_timeout: 5m, operation_timeout: 10m",
        )
        .replace("    port: 8080\n", "    port: 8080\n    timeout: 10m\n");
    std::fs::write(&path, text).unwrap();
    let run = elasticd(
        dir.path(),
        &[
            "--log",
            "elasticd=debug",
            "locate",
            "--config",
            "config.yaml",
            "--json",
        ],
        &[],
    )
    .success();
    let found: Value = serde_json::from_str(&run.stdout).expect("JSON");
    let found = found["web"].as_array().cloned().unwrap_or_default();
    assert_eq!(found.len(), 1250);
    assert_eq!(field(&found, "id"), sorted(ids));
    assert_eq!(field(&found, "address"), sorted(addresses));
    // 1,000 + 250: two pages, two HTTP requests, no retries.
    assert_eq!(api_calls(&run.stderr), 2, "{}", run.stderr);
    assert!(run.stderr.contains("pages=2"), "{}", run.stderr);
}

fn asg_config(names: &str, extra: &str) -> String {
    format!("asg: {{ names: [{names}]{extra} }}")
}

#[test]
fn asg_members_in_standby_or_unhealthy_are_left_out() {
    let dir = tmp();
    let moto = Moto::start(dir.path());
    let aws = moto.clients();
    let members = aws.group("web-asg", 4, &[("role", "web")]);
    assert_eq!(members.len(), 4);
    aws.set_unhealthy(&members[0]);
    aws.standby("web-asg", &members[1]);

    config(dir.path(), &moto, None, &asg_config("web-asg", ""));
    let run = elasticd(
        dir.path(),
        &[
            "--log",
            "elasticd=debug",
            "locate",
            "--config",
            "config.yaml",
            "--json",
        ],
        &[],
    )
    .success();
    let found: Value = serde_json::from_str(&run.stdout).expect("JSON");
    let found = found["web"].as_array().cloned().unwrap_or_default();
    assert_eq!(field(&found, "id"), members[2..].to_vec());
    assert_eq!(found[0]["meta"]["asg_name"], "web-asg");
    assert_eq!(found[0]["meta"]["lifecycle_state"], "InService");
    assert_eq!(found[0]["tags"]["role"], "web");
    // One DescribeAutoScalingGroups, one DescribeInstances.
    assert_eq!(api_calls(&run.stderr), 2, "{}", run.stderr);

    // Asking for them explicitly brings them back.
    config(
        dir.path(),
        &moto,
        None,
        &asg_config(
            "web-asg",
            ", lifecycle: [InService, Standby], healthy_only: false",
        ),
    );
    assert_eq!(field(&locate(dir.path()), "id"), members);

    // Groups chosen by tag, scoped by environment.
    aws.group(
        "api-asg",
        2,
        &[("role", "api"), ("Environment", "production")],
    );
    config(
        dir.path(),
        &moto,
        Some("production"),
        r#"asg: { filters: { "tag:role": [api, web] } }"#,
    );
    let found = locate(dir.path());
    assert_eq!(found.len(), 2);
    assert!(found.iter().all(|b| b["meta"]["asg_name"] == "api-asg"));
}

#[test]
fn a_missing_group_is_an_error_and_an_empty_group_is_not() {
    let dir = tmp();
    let moto = Moto::start(dir.path());
    let aws = moto.clients();
    aws.group("web-asg", 1, &[]);
    aws.group("empty-asg", 0, &[]);

    config(
        dir.path(),
        &moto,
        None,
        &asg_config("web-asg, gone-asg", ""),
    );
    let run = elasticd(dir.path(), &["locate", "--config", "config.yaml"], &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("Auto Scaling group `gone-asg` not found in us-east-1"),
        "{}",
        run.stderr
    );

    config(dir.path(), &moto, None, &asg_config("empty-asg", ""));
    assert!(locate(dir.path()).is_empty());
}

fn render_config(dir: &Path, port: u16) {
    let text = format!(
        "{aws}state_file: state.json
services:
  web:
    port: 8080
    locators:
      - ec2: {{ filters: {{ \"tag:role\": web }} }}
frontends:
  fe:
    reload: {{ command: [sh, -c, \"echo reload >> reloads\"] }}
outputs:
  - {{ template: \"builtin:haproxy\", path: web.cfg, frontend: fe, vars: {{ service: web }} }}
",
        aws = aws_section(port)
    );
    std::fs::write(dir.join("config.yaml"), text).expect("write config");
}

#[test]
fn emulator_killed_mid_run_keeps_the_last_good_set_and_recovers() {
    let dir = tmp();
    let mut moto = Moto::start(dir.path());
    let first = moto.clients().run(2, &[("role", "web")], None);
    render_config(dir.path(), moto.port);

    elasticd(dir.path(), &["render", "--config", "config.yaml"], &[]).success();
    let rendered = dir.read("web.cfg");
    for id in &first {
        assert!(rendered.contains(id.as_str()), "{rendered}");
    }

    // The API is gone: the pass fails, the file and the last good set stay as they were.
    moto.kill();
    let run = elasticd(dir.path(), &["render", "--config", "config.yaml"], &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("DescribeInstances in us-east-1 got no answer"),
        "{}",
        run.stderr
    );
    assert_eq!(dir.read("web.cfg"), rendered);
    let state = dir.read("state.json");
    for id in &first {
        assert!(state.contains(id.as_str()), "{state}");
    }

    // It comes back (empty, as a restarted emulator does) with new hosts: they are picked up.
    let moto = Moto::start_on(moto.port, dir.path());
    let second = moto.clients().run(3, &[("role", "web")], None);
    elasticd(dir.path(), &["render", "--config", "config.yaml"], &[]).success();
    let rendered = dir.read("web.cfg");
    for id in &second {
        assert!(rendered.contains(id.as_str()), "{rendered}");
    }
    assert!(!rendered.contains(first[0].as_str()), "{rendered}");
    assert_eq!(dir.reloads(), 2);
}

#[test]
fn api_errors_fail_the_locator_with_what_aws_said() {
    let dir = tmp();
    let moto = Moto::start(dir.path());
    moto.clients().run(1, &[("role", "web")], None);
    // AWS rejects an unknown filter with a 400; moto fails it with a 500. Either way the
    // locator has no answer, and says which call failed and how.
    config(
        dir.path(),
        &moto,
        None,
        r#"ec2: { filters: { "no-such-filter": x }, aws: { max_attempts: 1 } }"#,
    );
    let run = elasticd(dir.path(), &["locate", "--config", "config.yaml"], &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("DescribeInstances in us-east-1 failed:")
            && run.stderr.contains("HTTP 500"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_assumed_role_is_used_when_configured() {
    let dir = tmp();
    let moto = Moto::start(dir.path());
    let ids = moto.clients().run(1, &[("role", "web")], None);
    config(
        dir.path(),
        &moto,
        None,
        r#"ec2: { filters: { "tag:role": web }, aws: { role_arn: "arn:aws:iam::123456789012:role/elasticd-reader", external_id: x-1 } }"#,
    );
    let run = elasticd(
        dir.path(),
        &[
            "--log",
            "elasticd=debug",
            "locate",
            "--config",
            "config.yaml",
            "--json",
        ],
        &[],
    )
    .success();
    assert!(
        run.stderr
            .contains("role=\"arn:aws:iam::123456789012:role/elasticd-reader\""),
        "{}",
        run.stderr
    );
    let found: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(found["web"][0]["id"], ids[0].as_str());
}

#[test]
fn missing_credentials_and_region_are_clear_errors() {
    let dir = tmp();
    // Nothing listens here; no request is sent anyway, since loading fails first.
    let port = support::free_port();
    let write = |aws: &str| {
        std::fs::write(
            dir.path().join("config.yaml"),
            format!(
                "{aws}services:
  web:
    port: 8080
    locators:
      - ec2: {{ filters: {{ \"tag:role\": web }} }}
outputs: []
"
            ),
        )
        .expect("write config");
    };
    write(&aws_section(port));
    let started = std::time::Instant::now();
    let run = elasticd(
        dir.path(),
        &["locate", "--config", "config.yaml"],
        &[("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", "")],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("no usable AWS credentials in us-east-1; tried AWS_ACCESS_KEY_ID"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("profile `default` in"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("disabled by AWS_EC2_METADATA_DISABLED"),
        "{}",
        run.stderr
    );
    assert!(
        started.elapsed().as_secs() < 20,
        "took {:?}",
        started.elapsed()
    );

    write(&format!(
        "aws: {{ endpoint_url: \"http://127.0.0.1:{port}\", max_attempts: 1 }}\n"
    ));
    let run = elasticd(dir.path(), &["locate", "--config", "config.yaml"], &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("no AWS region found; tried `aws.region` in the config, AWS_REGION"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);

    // `check` validates without asking AWS: no credentials or region needed.
    elasticd(
        dir.path(),
        &["check", "--config", "config.yaml"],
        &[("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", "")],
    )
    .success();
}

/// The HAProxy checker (as in tests/frontends.rs): a missing binary fails with the package.
fn haproxy() -> String {
    program("haproxy", "haproxy")
}

#[test]
fn render_against_the_emulator_produces_a_config_haproxy_accepts() {
    let dir = tmp();
    let moto = Moto::start(dir.path());
    let aws = moto.clients();
    let hosts = aws.run(
        3,
        &[
            ("role", "web"),
            ("Name", "web \"quoted\"; {evil}"),
            ("Environment", "production"),
        ],
        None,
    );
    let members = aws.group(
        "api-asg",
        2,
        &[("role", "api"), ("Environment", "production")],
    );

    let wrapper = include_str!("frontends/haproxy-http.cfg")
        .replace("@DIR@", dir.path().to_str().expect("UTF-8 temp dir"))
        .replace("@PORT@", &support::free_port().to_string())
        .replace("@NAME@", "web");
    std::fs::write(dir.path().join("haproxy.cfg"), wrapper).expect("write wrapper");
    let text = format!(
        "environment: production
{aws}services:
  web:
    port: 8080
    locators:
      - ec2: {{ filters: {{ \"tag:role\": web }} }}
  api:
    port: 9090
    locators:
      - asg: {{ names: [api-asg], weight_tag: weight }}
frontends:
  haproxy:
    check: [{haproxy}, -c, -q, -f, haproxy.cfg, -f, web.cfg, -f, api.cfg]
outputs:
  - {{ template: \"builtin:haproxy\", path: web.cfg, frontend: haproxy, vars: {{ service: web }} }}
  - {{ template: \"builtin:haproxy\", path: api.cfg, frontend: haproxy, vars: {{ service: api }} }}
",
        aws = aws_section(moto.port),
        haproxy = haproxy(),
    );
    std::fs::write(dir.path().join("config.yaml"), text).expect("write config");
    elasticd(dir.path(), &["render", "--config", "config.yaml"], &[]).success();

    let web = dir.read("web.cfg");
    let api = dir.read("api.cfg");
    assert_eq!(web.matches("    server ").count(), 3, "{web}");
    assert_eq!(api.matches("    server ").count(), 2, "{api}");
    for id in hosts.iter().chain(&members) {
        assert!(
            web.contains(id.as_str()) || api.contains(id.as_str()),
            "{id}"
        );
    }
    assert!(!web.contains("{evil}") && !web.contains('"'), "{web}");

    // The real checker accepts both files together, as HAProxy would load them.
    let out = Command::new(haproxy())
        .args(["-c", "-f", "haproxy.cfg", "-f", "web.cfg", "-f", "api.cfg"])
        .current_dir(dir.path())
        .output()
        .expect("run haproxy -c");
    assert!(
        out.status.success(),
        "haproxy -c rejected the files:\n{}\n{web}\n{api}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn templates_see_instance_metadata() {
    let dir = tmp();
    let moto = Moto::start(dir.path());
    let members = moto.clients().group("web-asg", 2, &[("team", "checkout")]);
    std::fs::write(
        dir.path().join("meta.tera"),
        "{% for b in backends %}{{ b.id }} {{ b.meta.asg_name }} {{ b.meta.instance_type }} \
         {{ b.meta.lifecycle_state }} {{ b.meta.state }} {{ b.zone }} {{ b.tags.team }}\n{% endfor %}",
    )
    .expect("write template");
    std::fs::write(
        dir.path().join("config.yaml"),
        format!(
            "{aws}services:
  web:
    port: 8080
    locators:
      - asg: {{ names: [web-asg] }}
outputs:
  - {{ template: meta.tera, path: meta.txt, vars: {{ service: web }} }}
",
            aws = aws_section(moto.port)
        ),
    )
    .expect("write config");
    elasticd(dir.path(), &["render", "--config", "config.yaml"], &[]).success();
    let text = dir.read("meta.txt");
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    let want: Vec<String> = members
        .iter()
        .map(|id| format!("{id} web-asg t3.micro InService running us-east-1a checkout"))
        .collect();
    assert_eq!(lines, want, "{text}");
}
