//! The example plugins in `plugins/` (see plugins/EXAMPLES.md): through the real `elasticd`
//! binary with `plugin_dir` pointing at the repository's `plugins/` (`locate --json` for the
//! locators, `render` for the renderer), and run directly with a request on stdin for their
//! failure modes (a one-line reason on stderr, a non-zero exit, nothing on stdout).
//!
//! The AWS ones (`cloudmap`, `elbv2-targets`, `route53-rr`) talk to a real `moto_server` on a
//! free loopback port, seeded with boto3 from the same virtualenv (`support/aws_seed.py`), and
//! run with that virtualenv first on PATH (they need boto3). A missing moto fails these tests.
//! `http-sd` reads from a small HTTP server on 127.0.0.1 that each test starts.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};
use support::moto_server::{MotoServer, REGION, offline_aws_env, venv_bin};
use support::{Group, Output, Test, wait_until};

fn plugin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins")
}

fn tmp() -> Test {
    Test::new()
}

/// Runs `plugins/<path>` with `request` on stdin, the environment cleared as elasticd clears it
/// (PATH with the test virtualenv first, HOME in `dir`), plus `env`.
fn run_plugin(path: &str, dir: &Path, request: &Value, env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(plugin_dir().join(path));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", test_path())
        .env("HOME", dir)
        .env("ELASTICD_PLUGIN_PROTOCOL", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start plugin");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request.to_string().as_bytes())
        .expect("write request");
    Output::from(child.wait_with_output().expect("wait for plugin"))
}

/// AWS settings for a plugin talking to `moto`: dummy credentials, no config files, no
/// instance metadata (nothing leaves the machine).
fn aws_env(dir: &Path, moto: &MotoServer) -> Vec<(&'static str, String)> {
    let mut env = offline_aws_env(dir);
    env.push(("AWS_DEFAULT_REGION", REGION.into()));
    env.push(("AWS_ENDPOINT_URL", moto.url()));
    env
}

/// The PATH elasticd and its plugins get: the test virtualenv (boto3) first.
fn test_path() -> String {
    format!(
        "{}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        venv_bin().display()
    )
}

/// Writes `config.yaml` in `dir` with `plugin_dir` set to the repository's `plugins/`.
fn write_config(dir: &Path, body: &str) {
    std::fs::write(
        dir.join("config.yaml"),
        format!("plugin_dir: {}\n{body}", plugin_dir().display()),
    )
    .expect("write config");
}

/// Runs elasticd in `dir` with a cleared environment plus `env`.
fn elasticd(dir: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
    support::Cmd::new(dir)
        .args(args)
        .env_clear()
        .env("PATH", test_path())
        .env("HOME", dir)
        .envs(env.iter().cloned())
        .run()
}

/// `elasticd locate --json`: every service's backends as elasticd sees them.
fn locate(dir: &Path, env: &[(&str, String)]) -> Value {
    elasticd(dir, &["locate", "--config", "config.yaml", "--json"], env)
        .success()
        .json()
}

fn locator_request(service: &str, options: Value) -> Value {
    json!({"protocol": 1, "kind": "locator", "environment": null, "service": service,
           "default_port": null, "options": options})
}

/// `(address, port)` of each backend, sorted.
fn endpoints(backends: &Value) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = backends
        .as_array()
        .expect("a list")
        .iter()
        .map(|b| {
            (
                b["address"].as_str().expect("address").to_string(),
                b["port"].as_u64().expect("port"),
            )
        })
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------- cloudmap

fn seed_cloudmap(moto: &MotoServer) {
    moto.seed(
        "cloudmap",
        &json!({"namespace": "shop.local", "service": "web", "instances": [
            {"id": "web-1", "attributes": {"AWS_INSTANCE_IPV4": "10.1.0.1", "AWS_INSTANCE_PORT": "8080",
                                           "AVAILABILITY_ZONE": "us-east-1a", "role": "blue", "weight": "3"}},
            {"id": "web-2", "attributes": {"AWS_INSTANCE_IPV4": "10.1.0.2", "AWS_INSTANCE_PORT": "8081",
                                           "AVAILABILITY_ZONE": "us-east-1b", "role": "green"}},
            {"id": "web-3", "attributes": {"AWS_INSTANCE_IPV4": "10.1.0.3", "AWS_INSTANCE_PORT": "8080",
                                           "role": "blue"},
             "health": "UNHEALTHY"},
            {"id": "web-6", "attributes": {"AWS_INSTANCE_IPV6": "fd00::6", "AWS_INSTANCE_PORT": "8080",
                                           "role": "green"}},
            {"id": "web-7", "attributes": {"AWS_INSTANCE_CNAME": "web-7.shop.internal",
                                           "AWS_INSTANCE_PORT": "8080", "role": "green"}}
        ]}),
    );
}

#[test]
fn cloudmap_lists_healthy_instances_with_ports_zones_and_attributes() {
    let dir = tmp();
    let moto = MotoServer::start(dir.path());
    seed_cloudmap(&moto);
    // The Cloud Map service name defaults to elasticd's; only healthy instances by default.
    // `other` asks for ALL, narrowed by attribute, with one port for all.
    write_config(
        dir.path(),
        r#"services:
  web:
    locators:
      - exec:
          command: [cloudmap]
          options: { namespace: shop.local, weight_attribute: weight }
          pass_env: [AWS_*]
  other:
    locators:
      - exec:
          command: [cloudmap]
          options: { namespace: shop.local, service: web, health: ALL,
                     query_parameters: { role: blue }, port: 9000 }
          pass_env: [AWS_*]
  green:
    locators:
      - exec:
          command: [cloudmap]
          options: { namespace: shop.local, service: web, optional_parameters: { role: green } }
          pass_env: [AWS_*]
  purple:
    locators:
      - exec:
          command: [cloudmap]
          options: { namespace: shop.local, service: web, optional_parameters: { role: purple } }
          pass_env: [AWS_*]
outputs: []
"#,
    );
    let found = locate(dir.path(), &aws_env(dir.path(), &moto));
    // IPv4, else IPv6, else the CNAME.
    let healthy: Vec<(String, u64)> = vec![
        ("10.1.0.1".into(), 8080),
        ("10.1.0.2".into(), 8081),
        ("fd00::6".into(), 8080),
        ("web-7.shop.internal".into(), 8080),
    ];
    assert_eq!(endpoints(&found["web"]), healthy);
    let web1 = &found["web"][0];
    assert_eq!(web1["id"], "web-1");
    assert_eq!(web1["zone"], "us-east-1a");
    assert_eq!(web1["weight"], 3);
    assert_eq!(found["web"][1]["weight"], 1);
    // Reserved AWS_* attributes are not tags; the user's are.
    assert_eq!(web1["tags"], json!({"role": "blue", "weight": "3"}));
    assert_eq!(
        endpoints(&found["other"]),
        [("10.1.0.1".into(), 9000), ("10.1.0.3".into(), 9000)]
    );
    // Optional parameters prefer matching instances, and fall back to all when none match.
    assert_eq!(endpoints(&found["green"]), healthy[1..]);
    assert_eq!(endpoints(&found["purple"]), healthy);
}

#[test]
fn cloudmap_errors_are_one_line_and_print_nothing() {
    let dir = tmp();
    let mut moto = MotoServer::start(dir.path());
    seed_cloudmap(&moto);
    let env = aws_env(dir.path(), &moto);
    let run = |options: Value, env: &[(&str, String)]| {
        run_plugin(
            "locators/cloudmap",
            dir.path(),
            &locator_request("web", options),
            env,
        )
    };
    run(json!({"namespace": "nope.local"}), &env).failed_with("NamespaceNotFound");
    run(json!({}), &env).failed_with("option `namespace` is required");
    run(json!({"namespace": "shop.local", "health": "GOOD"}), &env)
        .failed_with("option `health` is 'GOOD'");
    run(
        json!({"namespace": "shop.local", "address": "ipv4", "health": "ALL"}),
        &env,
    )
    .failed_with("instance web-6 has no AWS_INSTANCE_IPV4");
    let no_region: Vec<_> = env
        .iter()
        .filter(|(k, _)| *k != "AWS_DEFAULT_REGION")
        .cloned()
        .collect();
    run(json!({"namespace": "shop.local"}), &no_region).failed_with("You must specify a region");
    moto.kill();
    run(json!({"namespace": "shop.local"}), &env).failed_with("Could not connect");
}

// ---------------------------------------------------------------- elbv2-targets

#[test]
fn elbv2_targets_resolves_instance_and_ip_targets_and_keeps_only_healthy_ones() {
    let dir = tmp();
    let moto = MotoServer::start(dir.path());
    let seeded = moto.seed("elbv2", &json!({"count": 3}));
    let env = aws_env(dir.path(), &moto);
    let inst = seeded["instances"].as_array().unwrap();
    let ip = |i: usize| inst[i]["ip"].as_str().unwrap().to_string();
    write_config(
        dir.path(),
        &format!(
            r#"services:
  web:
    locators:
      - exec: {{ command: [elbv2-targets], options: {{ target_group_name: web-instances }}, pass_env: [AWS_*] }}
  all:
    locators:
      - exec:
          command: [elbv2-targets]
          options: {{ target_group_arn: "{tg}", states: [healthy, unused], port: 7000 }}
          pass_env: [AWS_*]
  ips:
    locators:
      - exec: {{ command: [elbv2-targets], options: {{ target_group_arn: "{ip_tg}" }}, pass_env: [AWS_*] }}
outputs: []
"#,
            tg = seeded["instance_tg"].as_str().unwrap(),
            ip_tg = seeded["ip_tg"].as_str().unwrap(),
        ),
    );

    // moto reports running instances `healthy` and the stopped one `unused`.
    let found = locate(dir.path(), &env);
    assert_eq!(
        endpoints(&found["web"]),
        sorted_pairs(vec![(ip(0), 8080), (ip(1), 9090)])
    );
    for b in found["web"].as_array().unwrap() {
        let i = inst
            .iter()
            .find(|i| i["id"] == b["id"])
            .expect("a seeded instance");
        assert_eq!(b["zone"], i["zone"]);
        assert_eq!(
            b["meta"],
            json!({"target_group": "web-instances", "target_state": "healthy"})
        );
    }
    // By ARN, with `unused` too, one port for all.
    assert_eq!(
        endpoints(&found["all"]),
        sorted_pairs(vec![(ip(0), 7000), (ip(1), 7000), (ip(2), 7000)])
    );
    // ip targets are their own address.
    assert_eq!(
        endpoints(&found["ips"]),
        [("10.20.1.50".into(), 8080), ("10.20.2.51".into(), 81)]
    );

    // A deregistered target is gone on the next pass.
    moto.seed(
        "deregister",
        &json!({"arn": seeded["instance_tg"], "ids": [inst[0]["id"]]}),
    );
    assert_eq!(endpoints(&locate(dir.path(), &env)["web"]), [(ip(1), 9090)]);
}

fn sorted_pairs(mut v: Vec<(String, u64)>) -> Vec<(String, u64)> {
    v.sort();
    v
}

#[test]
fn elbv2_targets_can_use_the_ipv6_addresses_of_instances() {
    let dir = tmp();
    let moto = MotoServer::start(dir.path());
    let seeded = moto.seed("elbv2-ipv6", &json!({}));
    let out = run_plugin(
        "locators/elbv2-targets",
        dir.path(),
        &locator_request(
            "web",
            json!({"target_group_name": "web-v6", "address": "ipv6"}),
        ),
        &aws_env(dir.path(), &moto),
    )
    .success();
    let found = out.json();
    assert_eq!(
        endpoints(&found),
        [(seeded["dual"]["ipv6"].as_str().unwrap().to_string(), 8080)]
    );
    // The instance without one is left out, and said so on stderr (elasticd logs it).
    let v4_only = seeded["v4_only"]["id"].as_str().unwrap();
    assert!(
        out.stderr
            .contains(&format!("skipping {v4_only}: no ipv6 address")),
        "{}",
        out.stderr
    );
}

#[test]
fn elbv2_targets_errors_are_one_line_and_print_nothing() {
    let dir = tmp();
    let moto = MotoServer::start(dir.path());
    moto.seed("elbv2", &json!({"count": 2}));
    let env = aws_env(dir.path(), &moto);
    let run = |options: Value| {
        run_plugin(
            "locators/elbv2-targets",
            dir.path(),
            &locator_request("web", options),
            &env,
        )
    };
    run(json!({"target_group_name": "nope"})).failed_with("TargetGroupNotFound");
    run(json!({})).failed_with("set exactly one of the options");
    run(json!({"target_group_name": "web-ips", "target_group_arn": "arn:x"}))
        .failed_with("set exactly one of the options");
    run(json!({"target_group_name": "web-ips", "states": ["fine"]})).failed_with("option `states`");
    run(json!({"target_group_name": "web-ips", "port": 70000})).failed_with("not a port number");
}

// ---------------------------------------------------------------- http-sd

/// A one-route HTTP/1.1 server on 127.0.0.1 answering every request with `status` and `body`,
/// recording request heads. Stopped (thread joined) on drop.
struct SdServer {
    port: u16,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl SdServer {
    fn start(status: &'static str, body: String, delay: Duration) -> SdServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (stop2, requests2) = (stop.clone(), requests.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let mut head = String::new();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                requests2.lock().unwrap().push(head);
                std::thread::sleep(delay);
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        SdServer {
            port,
            stop,
            requests,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for SdServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port)).map(|mut s| {
            let _ = s.read(&mut [0u8; 1]);
        });
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const SD_DOC: &str = r#"[{"targets": ["127.0.0.2:8080", "127.0.0.3:8081"], "labels": {"__meta_dc": "a", "env": "prod"}},
 {"targets": [], "labels": {"empty": "group"}},
 {"targets": ["[::1]:9000"]}]"#;

#[test]
fn http_sd_targets_become_backends_and_the_configured_headers_are_sent() {
    let dir = tmp();
    let server = SdServer::start("200 OK", SD_DOC.into(), Duration::ZERO);
    // Relative to the config directory, which is the plugin's working directory.
    std::fs::write(dir.path().join("token"), "s3cret\n").unwrap();
    write_config(
        dir.path(),
        &format!(
            r#"services:
  web:
    locators:
      - exec:
          command: [http-sd]
          options: {{ url: "{url}", headers: {{ X-Team: edge }}, bearer_token_file: token, timeout: 3s }}
outputs: []
"#,
            url = server.url("/sd")
        ),
    );
    let found = locate(dir.path(), &[]);
    assert_eq!(
        endpoints(&found["web"]),
        [
            ("127.0.0.2".into(), 8080),
            ("127.0.0.3".into(), 8081),
            ("::1".into(), 9000)
        ]
    );
    assert_eq!(
        found["web"][0]["tags"],
        json!({"__meta_dc": "a", "env": "prod"})
    );
    let requests = server.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert!(
        requests[0].starts_with("GET /sd HTTP/1.1\r\n"),
        "{}",
        requests[0]
    );
    assert!(requests[0].contains("X-Team: edge\r\n"), "{}", requests[0]);
    assert!(
        requests[0].contains("Authorization: Bearer s3cret\r\n"),
        "{}",
        requests[0]
    );

    // A failing plugin fails the pass with its reason in elasticd's error.
    drop(server);
    let run = elasticd(
        dir.path(),
        &["locate", "--config", "config.yaml", "--json"],
        &[],
    );
    run.exited_saying(1, "http-sd: GET http://127.0.0.1:");
}

#[test]
fn http_sd_rejects_errors_garbage_and_slow_servers() {
    let dir = tmp();
    let run = |options: Value| {
        run_plugin(
            "locators/http-sd",
            dir.path(),
            &locator_request("web", options),
            &[],
        )
    };
    let not_found = SdServer::start("404 Not Found", "no such sd".into(), Duration::ZERO);
    run(json!({"url": not_found.url("/sd")})).failed_with("HTTP 404 Not Found: no such sd");
    let garbage = SdServer::start("200 OK", "<html>".into(), Duration::ZERO);
    run(json!({"url": garbage.url("/")})).failed_with("not JSON");
    let object = SdServer::start("200 OK", r#"{"targets": []}"#.into(), Duration::ZERO);
    run(json!({"url": object.url("/")})).failed_with("expected a JSON list");
    let bad_target = SdServer::start("200 OK", r#"[{"targets": [80]}]"#.into(), Duration::ZERO);
    run(json!({"url": bad_target.url("/")})).failed_with("group 0: `targets` must be a list");
    let slow = SdServer::start("200 OK", "[]".into(), Duration::from_secs(3));
    run(json!({"url": slow.url("/"), "timeout": 1})).failed_with("timed out");
    run(json!({"url": "ftp://127.0.0.1/"})).failed_with("option `url` must be");
    run(json!({"url": not_found.url("/"), "bearer_token_file": "missing"}))
        .failed_with("bearer_token_file missing");
}

/// `support/https_server.py`: an HTTPS file server on 127.0.0.1 with a fresh self-signed
/// certificate (`ca.pem` beside the served directory), in a process group killed on drop.
struct HttpsServer {
    _group: Group,
    port: u16,
}

impl HttpsServer {
    fn start(root: &Path) -> HttpsServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/https_server.py");
        let mut cmd = Command::new(venv_bin().join("python"));
        cmd.arg(script)
            .arg(root)
            .env_clear()
            .env("PATH", test_path());
        let log = root.with_file_name("https_server.log");
        let group = Group::spawn("https_server.py", cmd, &log);
        // Its first line is the port.
        wait_until(
            "https_server.py to print its port",
            Duration::from_secs(30),
            || group.log(),
            || group.log().contains('\n'),
        );
        let log = group.log();
        let line = log.lines().next().unwrap_or_default();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("https_server.py printed no port: {log:?}"));
        HttpsServer {
            _group: group,
            port,
        }
    }
}

#[test]
fn http_sd_verifies_https_with_the_system_cas_or_a_ca_file() {
    let dir = tmp();
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("sd.json"), SD_DOC).unwrap();
    let server = HttpsServer::start(&www);
    let url = format!("https://127.0.0.1:{}/sd.json", server.port);

    // Trusted through `ca_file` (relative to the config directory).
    write_config(
        dir.path(),
        &format!(
            "services:\n  web:\n    locators:\n      - exec: {{ command: [http-sd], options: {{ url: \"{url}\", ca_file: ca.pem }} }}\noutputs: []\n"
        ),
    );
    assert_eq!(endpoints(&locate(dir.path(), &[])["web"]).len(), 3);

    // The system CAs don't know a self-signed certificate.
    run_plugin(
        "locators/http-sd",
        dir.path(),
        &locator_request("web", json!({"url": url})),
        &[],
    )
    .failed_with("CERTIFICATE_VERIFY_FAILED");
}

// ---------------------------------------------------------------- route53-rr

fn change_request(options: &Value, addresses: &[&str]) -> Value {
    let backends: Vec<Value> = addresses
        .iter()
        .map(|a| json!({"address": a, "port": 80, "weight": 1, "tags": {}, "meta": {}}))
        .collect();
    json!({"protocol": 1, "kind": "action", "environment": null, "event": "change",
           "service": "web", "options": options,
           "changes": [{"service": "web", "added": [], "removed": [], "backends": backends}],
           "outputs": []})
}

/// Runs route53-rr once, with `options`, on a change to `addresses` (port 80).
fn route53_rr(dir: &Path, env: &[(&str, String)], options: &Value, addresses: &[&str]) -> Output {
    run_plugin(
        "actions/route53-rr",
        dir,
        &change_request(options, addresses),
        env,
    )
}

fn records(moto: &MotoServer, zone: &Value) -> Value {
    moto.seed("records", &json!({"zone_id": zone}))
}

/// A config whose service `web` reads `backends.json` and has route53-rr as its hook.
fn route53_config(dir: &Path, zone_name: &str) {
    write_config(
        dir,
        &format!(
            r#"state_file: state.json
services:
  web:
    port: 80
    locators:
      - file: {{ path: backends.json }}
    guard: {{ min_backends: 0 }}
    on_change:
      - exec: [route53-rr]
        options: {{ zone_name: {zone_name}, record_name: web.example.test, ttl: 30 }}
        pass_env: [AWS_*]
outputs:
  - {{ template: "builtin:haproxy", path: backend.cfg, vars: {{ service: web }} }}
"#
        ),
    );
}

fn write_backends(dir: &Path, targets: &[&str]) {
    std::fs::write(
        dir.join("backends.json"),
        json!([{"targets": targets}]).to_string(),
    )
    .unwrap();
}

#[test]
fn route53_rr_follows_the_backends_elasticd_applies() {
    let dir = tmp();
    let d = dir.path();
    let moto = MotoServer::start(d);
    let zone = moto.seed("hosted-zone", &json!({"name": "example.test"}))["id"].clone();
    let env = aws_env(d, &moto);
    let render = || elasticd(d, &["render", "--config", "config.yaml"], &env);
    let record = |values: &[&str]| {
        if values.is_empty() {
            json!([])
        } else {
            json!([{"name": "web.example.test.", "type": "A", "ttl": 30, "values": values}])
        }
    };

    // A hook that fails (no such zone) fails the run and stays owed.
    route53_config(d, "nope.test");
    write_backends(d, &["10.0.0.2:80", "10.0.0.10:80", "10.0.0.10:81"]);
    let run = render();
    run.exited_saying(1, "route53-rr: no hosted zone named nope.test.");
    assert_eq!(records(&moto, &zone), json!([]));

    // Fixed, the next run retries it although the backends did not change.
    route53_config(d, "example.test");
    render().success();
    assert_eq!(records(&moto, &zone), record(&["10.0.0.10", "10.0.0.2"]));

    write_backends(d, &["10.0.0.2:80", "10.0.0.3:80"]);
    render().success();
    assert_eq!(records(&moto, &zone), record(&["10.0.0.2", "10.0.0.3"]));

    write_backends(d, &[]);
    render().success();
    assert_eq!(records(&moto, &zone), record(&[]));
}

#[test]
fn route53_rr_keeps_the_record_set_equal_to_the_backends() {
    let dir = tmp();
    let moto = MotoServer::start(dir.path());
    let zone = moto.seed("hosted-zone", &json!({"name": "example.test"}))["id"].clone();
    let env = aws_env(dir.path(), &moto);
    let options =
        json!({"zone_name": "example.test", "record_name": "web.example.test", "ttl": 30});
    let hook =
        |options: &Value, addresses: &[&str]| route53_rr(dir.path(), &env, options, addresses);
    let ok = |out: Output| assert_eq!(out.code, 0, "hook failed: {}", out.stderr);

    // Distinct IPv4 addresses only (two ports on one host are one record value).
    ok(hook(
        &options,
        &["10.0.0.2", "10.0.0.10", "10.0.0.2", "fd00::1"],
    ));
    assert_eq!(
        records(&moto, &zone),
        json!([{"name": "web.example.test.", "type": "A", "ttl": 30, "values": ["10.0.0.10", "10.0.0.2"]}])
    );
    // The same set again changes nothing; a new one replaces it.
    let same = hook(&options, &["10.0.0.10", "10.0.0.2"]);
    assert!(same.stderr.contains("already holds"), "{}", same.stderr);
    ok(same);
    ok(hook(&options, &["10.0.0.3"]));
    assert_eq!(
        records(&moto, &zone),
        json!([{"name": "web.example.test.", "type": "A", "ttl": 30, "values": ["10.0.0.3"]}])
    );

    // AAAA by zone id, beside the A record.
    let aaaa = json!({"zone_id": zone, "record_name": "web.example.test.", "type": "AAAA"});
    ok(hook(&aaaa, &["fd00::1", "10.0.0.3", "fd00::2"]));
    assert_eq!(
        records(&moto, &zone),
        json!([{"name": "web.example.test.", "type": "A", "ttl": 30, "values": ["10.0.0.3"]},
               {"name": "web.example.test.", "type": "AAAA", "ttl": 60, "values": ["fd00::1", "fd00::2"]}])
    );

    // A service of the wrong family is refused, not read as empty.
    hook(&options, &["fd00::9"]).failed_with("none with an IPv4 address");
    // No backends: `keep` leaves the record, the default deletes it.
    let mut keep = options.clone();
    keep["on_empty"] = json!("keep");
    ok(hook(&keep, &[]));
    assert_eq!(records(&moto, &zone).as_array().unwrap().len(), 2);
    ok(hook(&options, &[]));
    assert_eq!(
        records(&moto, &zone),
        json!([{"name": "web.example.test.", "type": "AAAA", "ttl": 60, "values": ["fd00::1", "fd00::2"]}])
    );
    // Deleting what is gone already is not an error.
    ok(hook(&options, &[]));
}

#[test]
fn route53_rr_tells_a_public_zone_from_a_private_one_and_can_wait() {
    let dir = tmp();
    let moto = MotoServer::start(dir.path());
    let public = moto.seed("hosted-zone", &json!({"name": "example.test"}))["id"].clone();
    let private = moto.seed(
        "hosted-zone",
        &json!({"name": "example.test", "private": true}),
    )["id"]
        .clone();
    let env = aws_env(dir.path(), &moto);
    let hook = |options: Value| route53_rr(dir.path(), &env, &options, &["10.0.0.1"]);
    hook(json!({"zone_name": "example.test", "record_name": "web.example.test"}))
        .failed_with("2 hosted zones are named example.test.");
    let out = hook(json!({"zone_name": "example.test", "private": true,
                          "record_name": "web.example.test", "wait": true}));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        records(&moto, &private),
        json!([{"name": "web.example.test.", "type": "A", "ttl": 60, "values": ["10.0.0.1"]}])
    );
    assert_eq!(records(&moto, &public), json!([]));
}

#[test]
fn route53_rr_errors_are_one_line() {
    let dir = tmp();
    let moto = MotoServer::start(dir.path());
    moto.seed("hosted-zone", &json!({"name": "example.test"}));
    let env = aws_env(dir.path(), &moto);
    let hook = |options: Value| route53_rr(dir.path(), &env, &options, &["10.0.0.1"]);
    hook(json!({"zone_name": "nope.test", "record_name": "web.nope.test"}))
        .failed_with("no hosted zone named nope.test.");
    hook(json!({"zone_name": "example.test", "record_name": "web.other.test"}))
        .failed_with("not inside the hosted zone example.test.");
    hook(json!({"zone_id": "ZNOPE", "record_name": "web.example.test"}))
        .failed_with("NoSuchHostedZone");
    hook(json!({"zone_name": "example.test", "record_name": "web.example.test", "type": "CNAME"}))
        .failed_with("expected A or AAAA");
    let mut reload = change_request(
        &json!({"zone_name": "example.test", "record_name": "web.example.test"}),
        &[],
    );
    reload["event"] = json!("reload");
    run_plugin("actions/route53-rr", dir.path(), &reload, &env)
        .failed_with("this is an on_change hook");
}

// ---------------------------------------------------------------- envoy-cluster

fn render_request(options: Value, services: Value, service: Option<&str>) -> Value {
    let service = service.map(|s| services[s].clone()).unwrap_or(Value::Null);
    json!({"protocol": 1, "kind": "renderer", "environment": null, "output": "/tmp/envoy.json",
           "frontend": null, "options": options,
           "context": {"environment": null, "services": services, "service": service,
                       "backends": [], "vars": {}}})
}

fn backend(address: &str, port: u16, weight: u32, zone: Option<&str>) -> Value {
    json!({"address": address, "port": port, "endpoint": format!("{address}:{port}"), "weight": weight,
           "id": null, "name": null, "zone": zone, "tags": {}, "meta": {}, "is_ipv6": address.contains(':')})
}

#[test]
fn envoy_cluster_renders_clusters_with_weights_and_localities() {
    let dir = tmp();
    write_config(
        dir.path(),
        r#"state_file: state.json
services:
  web:
    port: 8080
    locators:
      - static:
          - { address: 127.0.0.1, weight: 2, zone: us-east-1a, tags: { rack: r1 } }
          - { address: 127.0.0.2, zone: us-east-1b }
          - { address: "127.0.0.3:8081", zone: us-east-1a }
          - 127.0.0.4
  api:
    locators:
      - static: ["api.internal:9000"]
outputs:
  - renderer: { exec: [envoy-cluster], options: { cluster: { health_checks: [] } } }
    path: out/web-cds.json
    vars: { service: web }
  - renderer: { exec: [envoy-cluster] }
    path: out/all-cds.json
  - renderer: { exec: [envoy-cluster], options: { format: eds } }
    path: out/web-eds.json
    vars: { service: web }
"#,
    );
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let run = elasticd(dir.path(), &["render", "--config", "config.yaml"], &[]);
    assert_eq!(run.code, 0, "render failed:\n{}", run.stderr);
    let read = |name: &str| -> Value {
        let text = std::fs::read_to_string(dir.path().join("out").join(name)).expect(name);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON ({e}):\n{text}"))
    };

    let web = read("web-cds.json");
    let resources = web["resources"].as_array().unwrap();
    assert_eq!(resources.len(), 1);
    let cluster = &resources[0];
    assert_eq!(
        cluster["@type"],
        "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    );
    assert_eq!(cluster["name"], "web");
    assert_eq!(cluster["type"], "STATIC");
    assert_eq!(cluster["connect_timeout"], "1s");
    assert_eq!(cluster["health_checks"], json!([]));
    assert_eq!(cluster["load_assignment"]["cluster_name"], "web");
    // One locality per zone, zone-less backends in one without a locality.
    let localities = cluster["load_assignment"]["endpoints"].as_array().unwrap();
    let zones: Vec<&Value> = localities.iter().map(|l| &l["locality"]["zone"]).collect();
    assert_eq!(
        zones,
        [&Value::Null, &json!("us-east-1a"), &json!("us-east-1b")]
    );
    let a = &localities[1]["lb_endpoints"];
    assert_eq!(
        a[0]["endpoint"]["address"]["socket_address"],
        json!({"address": "127.0.0.1", "port_value": 8080})
    );
    assert_eq!(a[0]["load_balancing_weight"], 2);
    assert_eq!(
        a[0]["metadata"]["filter_metadata"]["elasticd"],
        json!({"zone": "us-east-1a", "tags": {"rack": "r1"}})
    );
    assert_eq!(
        a[1]["endpoint"]["address"]["socket_address"],
        json!({"address": "127.0.0.3", "port_value": 8081})
    );
    assert_eq!(a[1]["load_balancing_weight"], 1);
    assert_eq!(
        localities[0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["address"],
        "127.0.0.4"
    );

    // Every service, by name, when the output names none; a host name makes the cluster
    // STRICT_DNS.
    let all = read("all-cds.json");
    let names: Vec<&Value> = all["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["name"])
        .collect();
    assert_eq!(names, [&json!("api"), &json!("web")]);
    assert_eq!(all["resources"][0]["type"], "STRICT_DNS");
    assert_eq!(
        all["resources"][1],
        *cluster
            .as_object()
            .map(|c| {
                let mut c = c.clone();
                c.remove("health_checks");
                Value::Object(c)
            })
            .as_ref()
            .unwrap()
    );
    assert_ne!(all["version_info"], web["version_info"]);

    // EDS: ClusterLoadAssignments only.
    let eds = read("web-eds.json");
    assert_eq!(
        eds["resources"][0]["@type"],
        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
    );
    assert_eq!(
        eds["resources"][0]["endpoints"],
        cluster["load_assignment"]["endpoints"]
    );

    // Same backends, same bytes: a second run rewrites nothing.
    let before = std::fs::read(dir.path().join("out/all-cds.json")).unwrap();
    let run = elasticd(dir.path(), &["render", "--config", "config.yaml"], &[]);
    assert_eq!(run.code, 0, "render failed:\n{}", run.stderr);
    assert_eq!(
        std::fs::read(dir.path().join("out/all-cds.json")).unwrap(),
        before
    );
}

#[test]
fn envoy_cluster_refuses_what_envoy_would_reject() {
    let dir = tmp();
    let services = json!({"api": {"name": "api", "port": null,
                                   "backends": [backend("api.internal", 9000, 1, None)]}});
    let render = |options: Value, service: Option<&str>| {
        run_plugin(
            "renderers/envoy-cluster",
            dir.path(),
            &render_request(options, services.clone(), service),
            &[],
        )
    };
    render(json!({"format": "eds"}), Some("api")).failed_with("EDS endpoints must be IP addresses");
    render(json!({"services": ["nope"]}), None).failed_with("no backend set for service(s) nope");
    render(json!({"cluster": {"name": "x"}}), None)
        .failed_with("option `cluster` must be a mapping without");
    render(json!({"format": "lds"}), None).failed_with("expected cds or eds");
    render(json!({"cluster": "api"}), None).failed_with("the cluster's name is `cluster_name`");
}

/// Settings go in `options`: an argument (as in `[route53-rr, --ttl, "30"]`) is refused, not
/// silently ignored.
#[test]
fn every_example_refuses_arguments() {
    let dir = tmp();
    for path in [
        "locators/cloudmap",
        "locators/elbv2-targets",
        "locators/http-sd",
        "actions/route53-rr",
        "renderers/envoy-cluster",
    ] {
        let mut cmd = Command::new(plugin_dir().join(path));
        cmd.args(["--ttl", "30"])
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", test_path())
            .stdin(Stdio::null());
        let out = cmd.output().expect("run plugin");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{path}: {stderr}");
        assert!(out.stdout.is_empty(), "{path} printed on stdout");
        assert!(
            stderr.contains("takes no arguments (got --ttl 30)"),
            "{path}: {stderr}"
        );
    }
}

// ---------------------------------------------------------------- docs

/// Every config snippet in plugins/EXAMPLES.md is a config `elasticd check` accepts, so the
/// documented options and plugin names stay true.
#[test]
fn the_config_snippets_in_examples_md_pass_check() {
    let doc = std::fs::read_to_string(plugin_dir().join("EXAMPLES.md")).unwrap();
    let mut checked = 0;
    for block in doc.split("```yaml\n").skip(1) {
        let snippet = block.split("```").next().unwrap();
        if !(snippet.starts_with("services:") || snippet.starts_with("outputs:")) {
            continue; // Fragments (pass_env) and Envoy's own bootstrap.
        }
        let dir = tmp();
        let mut config = snippet.to_string();
        if !snippet.starts_with("services:") {
            config
                .push_str("services:\n  web:\n    locators:\n      - static: [\"127.0.0.1:80\"]\n");
        }
        if !snippet.contains("\noutputs:") && !snippet.starts_with("outputs:") {
            config.push_str("outputs: []\n");
        }
        // `check` wants each output's directory to exist: an absolute one (`/etc/envoy/`) is
        // made inside the test's directory instead of on the machine.
        let config: String = config
            .lines()
            .map(|line| match line.split_once("    path: /") {
                Some((indent, rest)) if indent.trim().is_empty() || indent.trim() == "-" => {
                    let local = dir.path().join(rest);
                    std::fs::create_dir_all(local.parent().unwrap()).unwrap();
                    format!("{indent}    path: {}\n", local.display())
                }
                _ => format!("{line}\n"),
            })
            .collect();
        write_config(dir.path(), &config);
        let run = elasticd(dir.path(), &["check", "--config", "config.yaml"], &[]);
        assert_eq!(
            run.code, 0,
            "EXAMPLES.md snippet fails `elasticd check`:\n{snippet}\n{}",
            run.stderr
        );
        checked += 1;
    }
    assert_eq!(checked, 5, "snippets checked");
}
