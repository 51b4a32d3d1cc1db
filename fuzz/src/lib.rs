//! The properties the fuzz targets check, one function per target. The cargo-fuzz targets in
//! `fuzz_targets/` call these with libFuzzer's inputs; `tests/fuzz_seeded.rs` in the main crate
//! includes this file as a module and calls them with the committed corpus and a fixed-seed set
//! of mutations of it, so the normal test suite runs every property too. See `docs/fuzzing.md`.
//!
//! Each function panics (an `assert!`) when a property fails; a panic inside elasticd is a
//! finding as well.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use elasticd::backend::{Address, Backend, parse_target};
use elasticd::config::{self, Schedule};
use elasticd::locator::{DocumentFormat, LocateContext, parse_document};
use elasticd::render::escape::{escape_config_value, ident, unique_idents};
use elasticd::render::{PassContext, Renderer, builtin_names};
use elasticd::value::{HumanDuration, MAX_DURATION};
use elasticd::yaml;
use indexmap::IndexMap;

/// `refresh`'s upper bound, `config::schedule::MAX_REFRESH` (a year, as humantime counts it).
const MAX_REFRESH: Duration = Duration::from_secs(31_557_600);

/// Fuzz inputs that are larger than this are cut: the parsers' cost is linear or worse, and
/// long inputs only slow the search down.
pub const MAX_INPUT: usize = 64 * 1024;

fn cut(data: &[u8]) -> &[u8] {
    &data[..data.len().min(MAX_INPUT)]
}

/// Target `config`: the config loader never panics, whatever the text. A config it accepts can
/// be rendered through the built-in templates (with no backends) without a panic, and every
/// service's schedule has a period.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(cut(data)) else {
        return;
    };
    // A directory that does not exist: relative paths in the config resolve to nothing.
    let Ok(config) = config::parse(text, Path::new("/nonexistent/elasticd-fuzz/config.yaml"))
    else {
        return;
    };
    for service in config.services.values() {
        let _ = service.refresh.period();
    }
    // Custom templates would be read from disk (a fuzzed `/` would walk the whole tree): only
    // configs whose outputs are all built-in are rendered.
    let all_builtin = config.outputs.iter().all(|o| {
        o.template
            .as_ref()
            .is_some_and(|t| t.to_string().starts_with("builtin:"))
    });
    if !all_builtin {
        return;
    }
    let Ok(renderer) = Renderer::new(&config.outputs) else {
        return;
    };
    let sets: IndexMap<String, Vec<Backend>> = config
        .services
        .keys()
        .map(|name| (name.clone(), Vec::new()))
        .collect();
    let ctx = PassContext::new(
        config.environment.as_deref(),
        |s| config.services.get(s).and_then(|x| x.port),
        sets.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
    );
    for (i, output) in config.outputs.iter().enumerate() {
        let _ = renderer.render(i, output, &ctx.for_output(output));
    }
}

/// Target `discovery`: the first byte picks JSON (even) or YAML (odd), the rest is a `file`
/// locator document. Parsing never panics, and every backend it returns passes
/// [`Backend::validate`] and prints an endpoint that parses back to the same address and port.
pub fn discovery(data: &[u8]) {
    let data = cut(data);
    let Some((&selector, document)) = data.split_first() else {
        return;
    };
    let format = if selector % 2 == 0 {
        DocumentFormat::Json
    } else {
        DocumentFormat::Yaml
    };
    let ctx = LocateContext {
        service: "web".into(),
        environment: Some("prod".into()),
        // Half the inputs have a default port, so that bare targets are accepted too.
        default_port: (selector & 2 != 0).then_some(8080),
        base_dir: "/nonexistent/elasticd-fuzz".into(),
    };
    let Ok(backends) = parse_document(document, format, "file fuzz.doc", &ctx) else {
        return;
    };
    for b in &backends {
        assert!(b.validate().is_ok(), "invalid backend accepted: {b:?}");
        let (address, port) = parse_target(&b.endpoint())
            .unwrap_or_else(|e| panic!("endpoint {} does not parse: {e}", b.endpoint()));
        assert_eq!(address, b.address, "endpoint {}", b.endpoint());
        assert_eq!(port, Some(b.port), "endpoint {}", b.endpoint());
    }
}

/// Target `durations`: the text as a YAML document, read as a [`HumanDuration`] (timeouts,
/// settle windows) and as a [`Schedule`] (`refresh`). Neither panics; what they accept is in
/// range (0 < d <= 1 day for durations, 1 s <= d <= 1 year for intervals), a cron expression
/// has a period, and the daemon's scheduler takes every accepted schedule without a panic.
pub fn durations(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(cut(data)) else {
        return;
    };
    let Ok(node) = yaml::parse(text) else {
        return;
    };
    if let Ok(HumanDuration(d)) = node.deserialize::<HumanDuration>() {
        assert!(!d.is_zero() && d <= MAX_DURATION, "{text:?} gave {d:?}");
        // What the daemon does with these: deadlines from now, and jitter on top.
        let now = std::time::Instant::now();
        assert!(now.checked_add(d).is_some());
    }
    match node.deserialize::<Schedule>() {
        Ok(Schedule::Every(d)) => {
            assert!(
                d >= Duration::from_secs(1) && d <= MAX_REFRESH,
                "{text:?} gave {d:?}"
            );
            assert!(chrono::TimeDelta::from_std(d).is_ok());
            tokio_cron_scheduler::Job::new_repeated_async(d, |_, _| Box::pin(async {}))
                .unwrap_or_else(|e| {
                    panic!("{text:?}: accepted interval refused by the scheduler: {e}")
                });
        }
        Ok(schedule @ Schedule::Cron(_)) => {
            assert!(!schedule.period().is_zero(), "{text:?}: zero period");
            let Schedule::Cron(expr) = &schedule else {
                unreachable!()
            };
            tokio_cron_scheduler::Job::new_async(expr.as_str(), |_, _| Box::pin(async {}))
                .unwrap_or_else(|e| {
                    panic!("{expr:?}: accepted cron refused by the scheduler: {e}")
                });
        }
        Err(_) => {}
    }
}

/// One built-in template, compiled, with the config that uses it.
struct Harness {
    name: &'static str,
    config: config::Config,
    renderer: Renderer,
}

fn harnesses() -> &'static [Harness] {
    static HARNESSES: OnceLock<Vec<Harness>> = OnceLock::new();
    HARNESSES.get_or_init(|| {
        let mut out = Vec::new();
        for name in builtin_names() {
            let mut variants = vec![("", name)];
            // HAProxy's slot mode renders the metadata on a path of its own.
            if name.starts_with("haproxy") {
                variants.push((", slots: 2", name));
            }
            for (vars, name) in variants {
                let text = format!(
                    "services:\n  web:\n    locators: [static: []]\n    guard: {{ min_backends: 0 }}\n\
                     outputs:\n  - {{ template: \"builtin:{name}\", path: out.conf, vars: {{ service: web{vars} }} }}\n"
                );
                let config = config::parse(&text, Path::new("/nonexistent/elasticd-fuzz/c.yaml"))
                    .expect("harness config");
                let renderer = Renderer::new(&config.outputs)
                    .map_err(|e| format!("{e:?}"))
                    .expect("built-in templates compile");
                out.push(Harness {
                    name,
                    config,
                    renderer,
                });
            }
        }
        out
    })
}

fn render(h: &Harness, backends: Vec<Backend>) -> String {
    let output = &h.config.outputs[0];
    let ctx = PassContext::new(None, |_| None, [("web", backends.as_slice())]);
    let mut context = ctx.for_output(output);
    ctx.insert_slots(&mut context, output, &backends, None);
    h.renderer
        .render(0, output, &context)
        .unwrap_or_else(|e| panic!("{}: {e}", h.name))
}

/// The part of a line that the frontend parses: everything before the first `#`. In nginx,
/// HAProxy and VCL a `#` outside quotes starts a comment that runs to the end of the line; the
/// built-in Apache template puts its comments on lines of their own that start with `#`.
fn directive_part(line: &str) -> &str {
    line.split('#').next().unwrap_or_default()
}

fn is_identifier(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Target `escaping`: the input split at `0xFF` bytes (never part of UTF-8) into a backend's
/// `id`, `name`, `zone`, a tag key and value, and an address. Checks, for those values:
///
/// - [`escape_config_value`] keeps the character count, and its output holds only `[A-Za-z0-9]`
///   and `._:/@=+,[]-` (no whitespace, newline, quote, `;`, `{`, `}`, `#`, `\`, `$`, and no `%`,
///   so never an HAProxy `%[...]` sample expression, `%ci` or an Apache `%{...}`); escaping it
///   again changes nothing;
/// - [`ident`] is an identifier, and [`unique_idents`] of the values gives distinct identifiers;
/// - rendered by each built-in template (HAProxy also with `slots`), a backend carrying them
///   gives the same number of lines as one carrying the plain value `x`, and every line's
///   directive part (before its first `#`) is byte for byte the same: the values reach
///   comments only, so they add no line and no directive, and in the HAProxy outputs no `%[`
///   (a sample expression) appears anywhere a value went.
/// - an address that parses and validates renders with as many lines as `10.0.0.1`, and no
///   `%[` or `#` in it.
pub fn escaping(data: &[u8]) {
    let data = cut(data);
    let mut parts = data
        .split(|&b| b == 0xFF)
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let mut next = || parts.next().unwrap_or_default();
    let (id, name, zone, tag_key, tag_value, address) =
        (next(), next(), next(), next(), next(), next());
    let values = [&id, &name, &zone, &tag_key, &tag_value, &address];

    for v in values {
        let mut out = Vec::new();
        escape_config_value(v, &mut out).unwrap();
        let escaped = String::from_utf8(out).expect("escape gives UTF-8");
        assert_eq!(escaped.chars().count(), v.chars().count(), "{v:?}");
        assert!(
            escaped.chars().all(|c| c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    '.' | '_' | ':' | '/' | '@' | '=' | '+' | ',' | '[' | ']' | '-'
                )),
            "{v:?} escaped to {escaped:?}"
        );
        let mut again = Vec::new();
        escape_config_value(&escaped, &mut again).unwrap();
        assert_eq!(again, escaped.as_bytes());
        let id = ident(v);
        assert!(is_identifier(&id), "{v:?} gave ident {id:?}");
    }
    let names = unique_idents(&values);
    assert!(names.iter().all(|n| is_identifier(n)), "{names:?}");
    for (i, n) in names.iter().enumerate() {
        assert!(!names[..i].contains(n), "{values:?} gave {names:?}");
    }

    let base = parse_target("10.0.0.1:80").unwrap().0;
    let with = |address: Address, port: u16, meta: [&str; 5]| {
        let mut b = Backend::new(address, port);
        let some = |s: &str| (!s.is_empty()).then(|| s.into());
        b.id = some(meta[0]);
        b.name = some(meta[1]);
        b.zone = some(meta[2]);
        if !meta[3].is_empty() || !meta[4].is_empty() {
            b.tags.insert(meta[3], meta[4]);
        }
        b
    };
    // The plain twin has the same fields set (a template tests them for being set), each `x`.
    let plain_of = |s: &str| if s.is_empty() { "" } else { "x" };
    let hostile = [&*id, &*name, &*zone, &*tag_key, &*tag_value];
    let plain = hostile.map(plain_of);
    let parsed_address = parse_target(&address).ok().and_then(|(a, p)| {
        let b = Backend::new(a.clone(), p.unwrap_or(80));
        b.validate().is_ok().then_some((a, b.port))
    });

    for h in harnesses() {
        let is_haproxy = h.name.starts_with("haproxy");
        let out = render(h, vec![with(base.clone(), 80, hostile)]);
        let twin = render(h, vec![with(base.clone(), 80, plain)]);
        let (lines, twin_lines): (Vec<&str>, Vec<&str>) =
            (out.lines().collect(), twin.lines().collect());
        assert_eq!(
            lines.len(),
            twin_lines.len(),
            "{}: the values changed the line count:\n{out}\n---\n{twin}",
            h.name
        );
        for (line, twin_line) in lines.iter().zip(&twin_lines) {
            assert_eq!(
                directive_part(line),
                directive_part(twin_line),
                "{}: a value reached a directive:\n{out}",
                h.name
            );
            if is_haproxy {
                assert!(!directive_part(line).contains("%["), "{}:\n{out}", h.name);
            }
        }
        if let Some((a, port)) = &parsed_address {
            let out = render(h, vec![with(a.clone(), *port, plain)]);
            assert_eq!(
                out.lines().count(),
                twin_lines.len(),
                "{}: address {address:?} changed the line count:\n{out}",
                h.name
            );
            let endpoint = Backend::new(a.clone(), *port).endpoint();
            assert!(
                !endpoint.contains("%[") && !endpoint.contains('#'),
                "{endpoint}"
            );
        }
    }
}
