use super::*;
use crate::value::FileMode;

fn parse_at(text: &str) -> Result<Config, ConfigError> {
    parse(text, Path::new("/etc/elasticd/config.yaml"))
}

const GOOD: &str = r#"
environment: production
services:
  web:
    port: 8080
    locators:
      - static: ["10.0.0.1", "10.0.0.2:81", { address: "::1", weight: 3, tags: { a: b } }]
      - file: { path: web.json }
      - exec: { command: [sh, -c, "echo []"], timeout: 2s, options: { all: true }, pass_env: [AWS_*] }
    guard: { min_backends: 2, max_removed_ratio: 0.5 }
frontends:
  nginx:
    check: [nginx, -t]
    reload: { signal: HUP, pidfile: /run/nginx.pid }
  haproxy:
    check: [haproxy, -c, -f, "{staged}"]
    reload: { command: [systemctl, reload, haproxy], timeout: 1m }
outputs:
  - template: builtin:nginx
    path: conf.d/web.conf
    frontend: nginx
    mode: "0640"
    vars: { service: web, upstream: web_pool }
  - template: templates/all.tera
    path: /etc/haproxy/haproxy.cfg
    frontend: haproxy
"#;

#[test]
fn a_full_config_loads_and_resolves_relative_paths() {
    let config = parse_at(GOOD).unwrap();
    assert_eq!(config.environment.as_deref(), Some("production"));
    let web = &config.services["web"];
    assert_eq!(web.port, Some(8080));
    assert_eq!(web.locators.len(), 3);
    assert_eq!(web.guard.min_backends, 2);
    match &web.locators[1] {
        crate::locator::LocatorConfig::File(f) => {
            assert_eq!(f.path, Path::new("/etc/elasticd/web.json"))
        }
        other => panic!("{other:?}"),
    }
    match &web.locators[2] {
        crate::locator::LocatorConfig::Exec(e) => {
            // A bare name is kept as written and resolved on PATH (no plugin dir here).
            let e = &e.call;
            assert_eq!(e.exec[0], "sh");
            assert!(e.program.as_ref().is_some_and(|p| p.ends_with("sh")));
            assert_eq!(e.timeout.map(|t| t.0), Some(Duration::from_secs(2)));
            assert_eq!(e.options["all"], serde_json::Value::Bool(true));
            assert_eq!(e.pass_env, ["AWS_*"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        config.outputs[0].path,
        Path::new("/etc/elasticd/conf.d/web.conf")
    );
    assert_eq!(config.outputs[0].mode, Some(FileMode(0o640)));
    assert_eq!(
        config.outputs[1].template,
        Some(TemplateRef::File("/etc/elasticd/templates/all.tera".into()))
    );
    assert!(matches!(
        config.frontends["haproxy"].reload,
        Some(ReloadAction::Command { timeout, .. }) if timeout == Duration::from_secs(60)
    ));
}

#[test]
fn every_problem_is_reported_at_once_with_line_and_column() {
    let text = r#"environment: production
servces: {}
services:
  web:
    port: 80
    locators:
      - static: ["10.0.0.1;rm -rf", "10.0.0.2:99999"]
    guard: { min_backends: 1, max_removed_ratio: 2 }
  api:
    locators:
      - dns: { name: api.internal }
  "bad name":
    locators: []
frontends:
  nginx:
    check: []
    reload: { signal: HUPP, pidfile: /run/nginx.pid }
  varnish:
    reload: { command: [varnishreload], pidfile: /x }
outputs:
  - template: builtin:nginxx
    path: a.conf
    vars: { service: web }
  - template: builtin:nginx
    path: b.conf
    frontend: ngnix
    vars: { service: wbe }
  - template: builtin:haproxy
    path: b.conf
    frontend: nginx
  - template: custom.tera
    path: c.conf
    mode: "0999"
    timeout: 5s
"#;
    let err = parse_at(text).unwrap_err();
    insta::assert_snapshot!(err.to_string());
}

#[test]
fn yaml_syntax_errors_have_a_location() {
    let err = parse_at("services:\n  web: [\n").unwrap_err();
    let ConfigError::Invalid { problems, .. } = &err else {
        panic!("{err}");
    };
    assert!(problems[0].loc.is_some(), "{err}");
    assert!(err.to_string().contains("YAML syntax error"), "{err}");
}

#[test]
fn an_empty_file_says_what_is_missing() {
    let err = parse_at("").unwrap_err().to_string();
    assert!(err.contains("empty"), "{err}");
}

#[test]
fn durations_and_modes_parse() {
    let d: HumanDuration = yaml::parse("1m30s").unwrap().deserialize().unwrap();
    assert_eq!(d.0, Duration::from_secs(90));
    let d: HumanDuration = yaml::parse("15").unwrap().deserialize().unwrap();
    assert_eq!(d.0, Duration::from_secs(15));
    assert!(
        yaml::parse("soon")
            .unwrap()
            .deserialize::<HumanDuration>()
            .is_err()
    );
    assert!(
        yaml::parse("0s")
            .unwrap()
            .deserialize::<HumanDuration>()
            .is_err()
    );
    let m: FileMode = yaml::parse("0644").unwrap().deserialize().unwrap();
    assert_eq!(m.0, 0o644);
    let m: FileMode = yaml::parse("\"0600\"").unwrap().deserialize().unwrap();
    assert_eq!(m.0, 0o600);
    let m: FileMode = yaml::parse("\"0o644\"").unwrap().deserialize().unwrap();
    assert_eq!(m.0, 0o644);
}

#[test]
fn an_unquoted_0o_mode_is_refused_not_misread() {
    // YAML reads `0o644` as 420, which as octal digits would be the mode 0420.
    let text = "services:\n  web: { locators: [static: [\"10.0.0.1:80\"]] }\noutputs:\n  \
                - { template: \"builtin:nginx\", path: a.conf, mode: 0o644, vars: { service: web } }\n  \
                - { template: \"builtin:nginx\", path: b.conf, mode: 0x1A4, vars: { service: web } }\n";
    insta::assert_snapshot!(parse_at(text).unwrap_err().to_string());
}

#[test]
fn the_shipped_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml.example");
    let config = load(&path).unwrap();
    assert!(!config.services.is_empty());
}

#[test]
fn an_exec_locator_needs_a_command_and_paths_are_compared_normalized() {
    let err = parse_at(
        "services:\n  web:\n    locators: [exec: { command: [] }]\n\
         outputs:\n  - { template: \"builtin:nginx\", path: a.conf, vars: { service: web } }\n  \
         - { template: \"builtin:nginx\", path: ./a.conf, vars: { service: web } }\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("3:16: service `web`: `exec.command` must be a non-empty list"),
        "{err}"
    );
    assert!(
        err.contains("6:40: output `./a.conf` is written by more than one output"),
        "{err}"
    );
}

#[test]
fn bad_haproxy_runtime_sections_are_reported_with_their_location() {
    let text = r#"services:
  web:
    locators: [static: ["127.0.0.2:80"]]
frontends:
  no_socket:
    reload: { haproxy_runtime: { fallback: { signal: USR2, pidfile: /run/haproxy.pid } } }
  no_fallback:
    reload: { haproxy_runtime: { socket: /run/haproxy/admin.sock } }
  nested:
    reload:
      haproxy_runtime:
        socket: 127.0.0.1:9999
        fallback: { haproxy_runtime: { socket: /x, fallback: { master_socket: /y } } }
  bad_fallback:
    reload: { haproxy_runtime: { socket: /x, fallback: { signal: USR3, pidfile: /p } } }
  two_kinds:
    reload: { master_socket: /x, command: [true] }
  typo:
    reload: { haproxy_runtime: { socket: /x, timeout: 5s, fallbak: { master_socket: /y } } }
  bad_timeout:
    reload: { haproxy_runtime: { socket: /x, timeout: soon, fallback: { master_socket: /y } } }
  outer_timeout:
    reload: { haproxy_runtime: { socket: /x, fallback: { master_socket: /y } }, timeout: 5s }
outputs:
  - { template: "builtin:haproxy", path: a.cfg, vars: { service: web, slots: 0 } }
  - { template: "builtin:haproxy", path: b.cfg, vars: { service: web, slots: "16" } }
"#;
    let err = parse(text, Path::new("/etc/elasticd/config.yaml"))
        .unwrap_err()
        .to_string();
    insta::assert_snapshot!(err);
}

#[test]
fn a_good_section_resolves_paths_and_defaults_the_timeout() {
    use crate::frontend::SpecAction;
    use crate::frontend::haproxy_runtime::{DEFAULT_RUNTIME_TIMEOUT, RuntimeSocket};

    let text = "services:\n  web:\n    locators: [static: [\"127.0.0.2:80\"]]\n\
        frontends:\n  haproxy:\n    reload:\n      haproxy_runtime:\n        socket: run/admin.sock\n\
        \x20       fallback: { signal: USR2, pidfile: run/haproxy.pid }\n\
        outputs:\n  - { template: \"builtin:haproxy\", path: a.cfg, frontend: haproxy, vars: { service: web, slots: 16 } }\n";
    let config = parse(text, Path::new("/etc/elasticd/config.yaml")).unwrap();
    let Some(ReloadAction::Spec(SpecAction::HaproxyRuntime(runtime))) =
        &config.frontends["haproxy"].reload
    else {
        panic!("{:?}", config.frontends["haproxy"].reload);
    };
    assert_eq!(
        runtime.socket,
        RuntimeSocket::Unix("/etc/elasticd/run/admin.sock".into())
    );
    assert_eq!(runtime.timeout, DEFAULT_RUNTIME_TIMEOUT);
    assert!(matches!(
        &*runtime.fallback,
        ReloadAction::Signal { pidfile, .. } if pidfile == Path::new("/etc/elasticd/run/haproxy.pid")
    ));
}

// The AWS section as a whole config sees it: inherited by the locators with the feature, and
// a clear error without it.
const AWS_CONFIG: &str = "aws: { region: eu-west-1, max_attempts: 2 }
services:
  web:
    port: 80
    locators:
      - ec2: { filters: { 'tag:role': [web] } }
      - asg: { names: [web], aws: { region: us-east-1 } }
outputs: []
";

#[cfg(feature = "aws")]
#[test]
fn locators_inherit_the_top_level_aws_section() {
    let config = parse_at(AWS_CONFIG).unwrap();
    assert_eq!(config.aws.region.as_deref(), Some("eu-west-1"));
    let locators = &config.services["web"].locators;
    let (LocatorConfig::Ec2(ec2), LocatorConfig::Asg(asg)) = (&locators[0], &locators[1]) else {
        panic!("expected ec2 and asg: {locators:?}");
    };
    assert_eq!(ec2.aws.region.as_deref(), Some("eu-west-1"));
    assert_eq!(asg.aws.region.as_deref(), Some("us-east-1"));
    assert_eq!(asg.aws.max_attempts(), 2);
}

#[cfg(not(feature = "aws"))]
#[test]
fn a_build_without_aws_says_so() {
    let err = parse_at(AWS_CONFIG).unwrap_err().to_string();
    assert_eq!(err.matches(crate::aws::NOT_BUILT).count(), 3, "{err}");
    assert!(err.contains(":1:1: `aws`"), "{err}");
}

fn problems_of(text: &str) -> Vec<((usize, usize), String)> {
    let Err(ConfigError::Invalid { problems, .. }) = parse_at(text) else {
        panic!("accepted:\n{text}");
    };
    problems
        .into_iter()
        .map(|p| {
            (
                p.loc.map(|l| (l.line, l.column)).unwrap_or_default(),
                p.message,
            )
        })
        .collect()
}

#[test]
fn durations_out_of_range_are_problems_with_a_location() {
    let services = r#"
services:
  web:
    refresh: 300000000y
    timeout: 25h
    port: 80
    locators: [static: ["10.0.0.1"]]
  api:
    refresh: 9223372036854775807
    port: 80
    locators: [static: ["10.0.0.1"]]
outputs: []
"#;
    let problems = problems_of(services);
    let at: Vec<_> = problems.iter().map(|(at, _)| *at).collect();
    // A service stops at its first bad field, like every section.
    assert_eq!(at, [(4, 14), (9, 14)], "{problems:#?}");
    assert!(
        problems[0].1.contains("refresh must be at most 1 year"),
        "{}",
        problems[0].1
    );
    assert!(
        problems[1].1.contains("refresh must be at most 1 year"),
        "{}",
        problems[1].1
    );
    let timeout = services.replace("300000000y", "1y");
    let problems = problems_of(&timeout);
    assert_eq!(problems[0].0, (5, 14), "{problems:#?}");
    assert!(
        problems[0].1.contains("`25h` is too long"),
        "{}",
        problems[0].1
    );

    let good = "services:\n  web: { port: 80, locators: [static: [\"10.0.0.1\"]] }\noutputs: []\n";
    for (daemon, column, message) in [
        ("settle_min: 2h", 23, "settle_min must be at most 1h"),
        ("settle_max: 9223372036854775807", 23, "at most 1 day"),
        ("settle_min: 1s, settle_max: 25h", 39, "`25h` is too long"),
        ("backoff_max: 2d", 24, "at most 1 day"),
    ] {
        let problems = problems_of(&format!("daemon: {{ {daemon} }}\n{good}"));
        assert_eq!(problems.len(), 1, "{daemon}: {problems:#?}");
        assert_eq!(problems[0].0, (1, column), "{daemon}: {problems:#?}");
        assert!(
            problems[0].1.contains(message),
            "{daemon}: {}",
            problems[0].1
        );
    }
}

#[test]
fn the_longest_durations_are_accepted() {
    let text = r#"
daemon: { settle_min: 1h, settle_max: 24h, backoff_max: 1d }
services:
  web:
    refresh: 1y
    timeout: 24h
    port: 80
    locators: [static: ["10.0.0.1"]]
outputs: []
"#;
    let config = parse_at(text).unwrap();
    assert_eq!(config.daemon.settle_min.0, MAX_SETTLE_MIN);
    assert_eq!(config.daemon.settle_max.0, crate::value::MAX_DURATION);
}

const CLUSTER_CONFIG: &str = "cluster:
  name: edge
  etcd: { endpoints: [http://127.0.0.1:2379], ca_file: ca.pem }
services:
  web:
    locators: [static: [10.0.0.1:80]]
";

#[cfg(feature = "etcd")]
#[test]
fn the_cluster_section_loads_and_its_problems_point_at_their_keys() {
    let config = parse_at(CLUSTER_CONFIG).unwrap();
    let cluster = config.cluster.unwrap();
    assert_eq!(cluster.name, "edge");
    assert_eq!(
        cluster.etcd.ca_file.as_deref(),
        Some(Path::new("/etc/elasticd/ca.pem"))
    );
    let bad = CLUSTER_CONFIG.replace("name: edge", "name: edge\n  share: [static]");
    let problems = problems_of(&bad);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0, (3, 10), "{problems:?}");
    assert!(
        problems[0].1.contains("`static`, which can't be shared"),
        "{problems:?}"
    );
}

#[cfg(not(feature = "etcd"))]
#[test]
fn a_build_without_etcd_says_so() {
    let err = parse_at(CLUSTER_CONFIG).unwrap_err().to_string();
    assert!(err.contains(crate::fleet::NOT_BUILT), "{err}");
    assert!(err.contains(":1:1: `cluster`"), "{err}");
}

#[test]
fn shared_sits_beside_the_kind_and_bad_values_point_at_themselves() {
    let text = "services:
  web:
    locators:
      - exec: { command: [sh] }
        shared: false
      - static: [10.0.0.1:80]
        shared: false
      - file: { path: web.json }
";
    let config = parse_at(text).unwrap();
    let web = &config.services["web"];
    assert_eq!(web.locators.len(), 3);
    let shared: Vec<Option<bool>> = web.fleet_forms.iter().map(|f| f.shared).collect();
    assert_eq!(shared, [Some(false), Some(false), None]);
    // The election key's settings don't carry `shared`.
    let plain = parse_at(&text.replace("        shared: false\n", "")).unwrap();
    assert_eq!(
        plain.services["web"].fleet_forms[0].settings,
        web.fleet_forms[0].settings
    );
    let problems = problems_of(&text.replace(
        "      - static: [10.0.0.1:80]\n        shared: false",
        "      - static: [10.0.0.1:80]\n        shared: true",
    ));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0, (7, 17), "{problems:?}");
    assert!(
        problems[0]
            .1
            .contains("`static` is host-local and can't be shared"),
        "{problems:?}"
    );
    let problems = problems_of(&text.replace(
        "shared: false\n      - static",
        "shared: no way\n      - static",
    ));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0, (5, 17), "{problems:?}");
    assert!(
        problems[0].1.contains("`shared` must be `true`"),
        "{problems:?}"
    );
    let inside = "services:\n  web:\n    locators: [exec: { command: [sh], shared: false }]\n";
    let problems = problems_of(inside);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0, (3, 39), "{problems:?}");
    assert!(
        problems[0].1.contains("goes beside the locator's kind"),
        "{problems:?}"
    );
}
