use std::path::Path;

use indexmap::IndexMap;

use super::*;
use crate::backend::{Address, parse_target};
use crate::config;

fn backend(target: &str, weight: u32, name: Option<&str>) -> Backend {
    let (address, port) = parse_target(target).unwrap();
    Backend {
        weight,
        name: name.map(Into::into),
        zone: name.map(|_| "zone-a".into()),
        ..Backend::new(address, port.unwrap())
    }
}

fn render_builtin(template: &str, vars: &str, backends: Vec<Backend>) -> String {
    let text = format!(
        "services:\n  web:\n    locators: [static: []]\n    guard: {{ min_backends: 0 }}\n\
         outputs:\n  - {{ template: \"builtin:{template}\", path: out.conf, vars: {{ service: web{vars} }} }}\n"
    );
    let config = config::parse(&text, Path::new("/tmp/x/config.yaml")).unwrap();
    let renderer = Renderer::new(&config.outputs)
        .map_err(|e| format!("{e:?}"))
        .unwrap();
    let mut sets = IndexMap::new();
    sets.insert("web".to_string(), backends);
    let ctx = PassContext::new(
        config.environment.as_deref(),
        |s| config.services.get(s).and_then(|x| x.port),
        sets.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
    );
    renderer
        .render(0, &config.outputs[0], &ctx.for_output(&config.outputs[0]))
        .unwrap()
}

fn many() -> Vec<Backend> {
    let mut v = vec![
        backend("10.0.0.1:8080", 1, Some("web-1")),
        backend("10.0.0.2:8080", 2, None),
        backend("[::1]:8080", 3, None),
        backend("web-4.internal:8081", 1, Some("web-4")),
    ];
    crate::backend::normalize(&mut v);
    v
}

#[test]
fn builtin_snapshots() {
    for name in builtin_names() {
        insta::assert_snapshot!(format!("{name}_many"), render_builtin(name, "", many()));
        insta::assert_snapshot!(
            format!("{name}_one"),
            render_builtin(name, "", vec![backend("127.0.0.1:80", 1, None)])
        );
        insta::assert_snapshot!(format!("{name}_none"), render_builtin(name, "", vec![]));
    }
}

#[test]
fn builtin_knobs_reach_the_output() {
    let out = render_builtin(
        "nginx",
        ", upstream: pool, balance: least_conn, keepalive: 16",
        many(),
    );
    assert!(out.contains("upstream pool {"), "{out}");
    assert!(out.contains("least_conn;"), "{out}");
    assert!(out.contains("keepalive 16;"), "{out}");
    let out = render_builtin("haproxy", ", backend: be_web, httpchk: /health", many());
    assert!(out.contains("backend be_web"), "{out}");
    assert!(out.contains("option httpchk GET /health"), "{out}");
}

#[test]
fn null_vars_fall_back_to_defaults() {
    let out = render_builtin("nginx", ", upstream: ~", many());
    assert!(out.contains("upstream web {"), "{out}");
}

#[test]
fn hostile_metadata_cannot_add_lines_or_directives() {
    let hostile = "x\";\n}\nserver evil 6.6.6.6:1;# {{ \\";
    for name in builtin_names() {
        let plain = render_builtin(name, "", vec![backend("10.0.0.1:80", 1, Some("plain"))]);
        let mut b = backend("10.0.0.1:80", 1, Some(hostile));
        b.id = Some(hostile.into());
        b.zone = Some(hostile.into());
        b.tags.insert("k", hostile);
        let out = render_builtin(name, "", vec![b]);
        assert_eq!(out.lines().count(), plain.lines().count(), "{name}:\n{out}");
        assert!(!out.contains("6.6.6.6:1;"), "{name}:\n{out}");
        assert!(!out.contains('"') || !out.contains("x\""), "{name}:\n{out}");
    }
}

#[test]
fn custom_templates_can_include_siblings_and_report_missing_variables() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("part.tera"),
        "{{ backends | length }} backends",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("main.tera"),
        "# {% include \"part.tera\" %}\n{{ vars.missing.deeper }}\n",
    )
    .unwrap();
    let text = "services:\n  web:\n    locators: [static: [\"10.0.0.1:80\"]]\n\
                outputs:\n  - { template: main.tera, path: out.conf, vars: { service: web } }\n";
    let config = config::parse(text, &dir.path().join("config.yaml")).unwrap();
    let renderer = Renderer::new(&config.outputs)
        .map_err(|e| format!("{e:?}"))
        .unwrap();
    let mut sets = IndexMap::new();
    sets.insert("web".to_string(), many());
    let ctx = PassContext::new(
        config.environment.as_deref(),
        |s| config.services.get(s).and_then(|x| x.port),
        sets.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
    );
    let err = renderer
        .render(0, &config.outputs[0], &ctx.for_output(&config.outputs[0]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("main.tera"), "{err}");
    assert!(err.contains("missing"), "{err}");
    assert!(
        err.contains(":2:") || err.contains("2 |") || err.contains("line 2"),
        "{err}"
    );
}

#[test]
fn a_template_that_does_not_compile_is_reported_with_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.tera"), "{% for x in %}").unwrap();
    let text = "services:\n  web:\n    locators: [static: [\"10.0.0.1:80\"]]\n\
                outputs:\n  - { template: bad.tera, path: out.conf, vars: { service: web } }\n";
    let config = config::parse(text, &dir.path().join("config.yaml")).unwrap();
    let errors = Renderer::new(&config.outputs).err().unwrap();
    let msg = errors[0].to_string();
    assert!(msg.contains("bad.tera"), "{msg}");
}

fn render_slotted(
    template: &str,
    slots: u32,
    backends: Vec<Backend>,
    previous: Option<&str>,
) -> String {
    let text = format!(
        "services:\n  web:\n    locators: [static: []]\n    guard: {{ min_backends: 0 }}\n\
         outputs:\n  - {{ template: \"builtin:{template}\", path: out.conf, vars: {{ service: web, slots: {slots} }} }}\n"
    );
    let config = config::parse(&text, Path::new("/tmp/x/config.yaml")).unwrap();
    let renderer = Renderer::new(&config.outputs)
        .map_err(|e| format!("{e:?}"))
        .unwrap();
    let mut sets = IndexMap::new();
    sets.insert("web".to_string(), backends.clone());
    let ctx = PassContext::new(
        config.environment.as_deref(),
        |s| config.services.get(s).and_then(|x| x.port),
        sets.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
    );
    let mut context = ctx.for_output(&config.outputs[0]);
    ctx.insert_slots(
        &mut context,
        &config.outputs[0],
        &backends,
        previous.map(str::as_bytes),
    );
    renderer.render(0, &config.outputs[0], &context).unwrap()
}

fn five() -> Vec<Backend> {
    let mut v: Vec<Backend> = (2..=6)
        .map(|h| backend(&format!("127.0.0.{h}:8080"), h - 1, None))
        .collect();
    v[0].name = Some("web-1".into());
    v
}

#[test]
fn slotted_haproxy_snapshots() {
    for name in ["haproxy", "haproxy-tcp"] {
        insta::assert_snapshot!(
            format!("{name}_slots_none"),
            render_slotted(name, 4, vec![], None)
        );
        insta::assert_snapshot!(
            format!("{name}_slots_one"),
            render_slotted(name, 4, vec![backend("127.0.0.2:8080", 1, None)], None)
        );
        // Five backends overflow four slots: the count grows to eight.
        insta::assert_snapshot!(
            format!("{name}_slots_five"),
            render_slotted(name, 4, five(), None)
        );
    }
}

#[test]
fn slotted_renders_keep_each_backend_in_its_slot() {
    let first = render_slotted("haproxy", 4, five()[..3].to_vec(), None);
    // 127.0.0.3 leaves, 127.0.0.5 and .6 arrive: .2 and .4 stay where they were.
    let mut now = five();
    now.remove(1);
    let second = render_slotted("haproxy", 4, now, Some(&first));
    let line = |text: &str, slot: &str| {
        text.lines()
            .find(|l| l.contains(&format!("server web_{slot} ")))
            .unwrap()
            .to_string()
    };
    assert_eq!(line(&first, "s1"), line(&second, "s1"));
    assert_eq!(line(&first, "s3"), line(&second, "s3"));
    assert!(line(&second, "s2").contains("127.0.0.5:8080"), "{second}");
    assert!(line(&second, "s4").contains("127.0.0.6:8080"), "{second}");
}

#[test]
fn renderer_plugins_get_slots_only_when_the_output_has_them() {
    let mut ctx = Context::new();
    ctx.insert("backends", &Vec::<u32>::new());
    let plain = context_json(&ctx);
    assert!(plain.get("slots").is_none(), "{plain}");
    assert_eq!(plain["backends"], serde_json::json!([]));
    ctx.insert("slots", &vec![1, 2]);
    assert_eq!(context_json(&ctx)["slots"], serde_json::json!([1, 2]));
}

/// A random value from `pool`.
fn pick<'a>(rng: &mut fastrand::Rng, pool: &[&'a str]) -> &'a str {
    pool[rng.usize(..pool.len())]
}

fn random_backend(rng: &mut fastrand::Rng) -> Backend {
    let address = match rng.u8(..4) {
        0 => Address::Ip(std::net::IpAddr::V6(std::net::Ipv6Addr::from(rng.u128(..)))),
        1 => Address::Host(format!("web-{}.internal", rng.u16(..))),
        _ => Address::Ip(std::net::IpAddr::V4(std::net::Ipv4Addr::from(rng.u32(..)))),
    };
    let texts = [
        "",
        "i-0abc",
        "web 1",
        "x\";\n}#{{ %[src] \\",
        "zone-a",
        "ünï",
    ];
    let field = |rng: &mut fastrand::Rng| rng.bool().then(|| pick(rng, &texts).into());
    // Runs of one port as well as any, like the weights below.
    let port = if rng.bool() { 80 } else { rng.u16(1..) };
    let mut b = Backend::new(address, port);
    // Runs of a few weights as well as any, for the renderer that reuses the text of the last.
    b.weight = if rng.bool() {
        rng.u32(0..3)
    } else {
        rng.u32(0..=crate::backend::MAX_WEIGHT)
    };
    b.id = field(rng);
    b.name = field(rng);
    b.zone = field(rng);
    if rng.bool() {
        b.tags.insert(pick(rng, &texts), pick(rng, &texts));
    }
    b.healthy = [None, Some(true), Some(false)][rng.usize(..3)];
    b
}

fn random_var(rng: &mut fastrand::Rng) -> serde_json::Value {
    let strings = [
        "hash",
        "round_robin",
        "least_conn",
        "",
        "5s",
        "pool",
        "$x; }",
        "remote_addr",
        "3",
    ];
    match rng.u8(..10) {
        0 => serde_json::Value::Null,
        1 => serde_json::json!(rng.bool()),
        2 => serde_json::json!(rng.f64() * 10.0),
        3 => serde_json::json!(rng.i64(-100..100)),
        4 => serde_json::json!(rng.u64(..)),
        5 => serde_json::json!([1, "a"]),
        _ => serde_json::json!(pick(rng, &strings)),
    }
}

#[test]
fn native_nginx_matches_tera_on_random_sets_and_vars() {
    let text = "services:\n  web:\n    locators: [static: []]\n    guard: { min_backends: 0 }\n\
                outputs:\n  - { template: \"builtin:nginx\", path: out.conf, vars: { service: web } }\n";
    let mut config = config::parse(text, Path::new("/tmp/x/config.yaml")).unwrap();
    let renderer = Renderer::new(&config.outputs)
        .map_err(|e| format!("{e:?}"))
        .unwrap();
    let keys = [
        "upstream",
        "balance",
        "hash_key",
        "max_fails",
        "fail_timeout",
        "keepalive",
    ];
    let mut native = 0;
    for seed in 0..400 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut backends: Vec<Backend> = (0..rng.usize(..25))
            .map(|_| random_backend(&mut rng))
            .collect();
        crate::backend::normalize(&mut backends);
        let mut vars = serde_json::Map::new();
        vars.insert("service".into(), "web".into());
        for key in keys {
            if rng.u8(..3) == 0 {
                vars.insert(key.into(), random_var(&mut rng));
            }
        }
        config.outputs[0].vars = vars;
        let output = &config.outputs[0];
        let mut sets = IndexMap::new();
        sets.insert("web".to_string(), backends.clone());
        let ctx = PassContext::new(
            None,
            |_| None,
            sets.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
        );
        let tera = renderer.render(0, output, &ctx.for_output(output));
        let fast = fast::nginx("web", &output.vars, &backends);
        if let Some(fast) = &fast {
            native += 1;
            assert_eq!(
                Ok(fast.as_str()),
                tera.as_deref().map_err(ToString::to_string),
                "seed {seed}"
            );
        }
        let pass = renderer.render_pass(
            0,
            output,
            &PassContext::new(
                None,
                |_| None,
                sets.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
            ),
            None,
        );
        assert_eq!(
            pass.map_err(|e| e.to_string()),
            tera.map_err(|e| e.to_string()),
            "seed {seed}"
        );
    }
    // Most random var sets are plain strings and integers: the native path must be the one tested.
    assert!(native > 150, "only {native} of 400 rendered natively");
}
