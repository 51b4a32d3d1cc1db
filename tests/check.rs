//! `elasticd check` catches what `render` would fail on, through the binary: templates rendered
//! against sample backends, missing or unwritable directories, impossible cron expressions,
//! unquoted `0o` modes, ambiguous IPv6 addresses, the shipped example config, and config errors
//! in plain words (no Rust type names) that name their service or frontend.

mod support;

use support::Test;

const SERVICE: &str = "services:\n  web:\n    port: 80\n    locators: [static: [\"127.0.0.1\"]]\n";

fn check(t: &Test) -> support::Output {
    t.elasticd(["check", "--config", "config.yaml"]).run()
}

#[test]
fn an_undefined_variable_is_a_check_error_with_the_template_line() {
    let t = Test::new()
        .config(&format!(
            "{SERVICE}outputs:\n  - {{ template: t.tera, path: out.conf, vars: {{ service: web }} }}\n"
        ))
        .file(
            "t.tera",
            "# header\n{% for b in backends %}\nserver {{ b.adress }};\n{% endfor %}\n",
        );
    let run = check(&t);
    run.exited_saying(2, "Field `adress` is not defined");
    assert!(run.stderr.contains("t.tera:3:"), "{}", run.stderr);
    assert!(
        run.stderr.contains("error: config.yaml:6:17: output "),
        "{}",
        run.stderr
    );
    assert!(!t.exists("out.conf"), "check writes nothing");

    // Fixed, it passes; and render agrees.
    t.write(
        "t.tera",
        "{% for b in backends %}server {{ b.endpoint }};\n{% endfor %}",
    );
    let run = check(&t).success();
    assert_eq!(
        run.stdout.trim(),
        format!("{}: OK (1 service, 0 frontends, 1 output)", "config.yaml")
    );
    let run = t.render().run().success();
    assert_eq!(t.read("out.conf"), "server 127.0.0.1:80;\n");
    assert!(run.stderr.contains("1 backend (+1 -0)"), "{}", run.stderr);
}

#[test]
fn check_locate_renders_with_the_backends_the_locators_find() {
    // The sample backends have a name; a static backend has none, which this template does not
    // allow for: plain `check` passes, `check --locate` finds what `render` would fail on.
    let t = Test::new()
        .config(&format!(
            "{SERVICE}outputs:\n  - {{ template: t.tera, path: out.conf, vars: {{ service: web }} }}\n"
        ))
        .file(
            "t.tera",
            "{% for b in backends %}\nserver {{ b.name | upper }};\n{% endfor %}\n",
        );
    check(&t).success();
    let run = t
        .elasticd(["check", "--locate", "--config", "config.yaml"])
        .run();
    run.exited_saying(2, "t.tera:2:");
    assert!(
        run.stderr
            .contains("check --locate renders each template with the backends its service's"),
        "{}",
        run.stderr
    );
    assert!(!t.exists("out.conf"), "check writes nothing");
    assert_eq!(t.render().run().code, 1, "render agrees");

    // A locator that fails is a problem of its own.
    t.write(
        "config.yaml",
        "services:\n  web:\n    port: 80\n    locators: [file: { path: missing.json }]\n",
    );
    check(&t).success();
    let run = t
        .elasticd(["check", "--locate", "--config", "config.yaml"])
        .run();
    run.exited_saying(2, "service `web`: ");
    assert!(run.stderr.contains("missing.json"), "{}", run.stderr);
}

#[test]
fn every_builtin_passes_with_its_knobs_and_slots() {
    let outputs: String = [
        "nginx",
        "nginx-stream",
        "haproxy",
        "haproxy-tcp",
        "varnish",
        "apache",
    ]
    .iter()
    .map(|b| format!("  - {{ template: \"builtin:{b}\", path: {b}.conf, vars: {{ service: web }} }}\n"))
    .chain(std::iter::once(
        "  - { template: \"builtin:haproxy\", path: slots.cfg, vars: { service: web, slots: 4 } }\n".to_string(),
    ))
    .collect();
    let t = Test::new().config(&format!("{SERVICE}outputs:\n{outputs}"));
    let run = check(&t).success();
    assert!(run.stdout.contains("7 outputs"), "{}", run.stdout);
    assert_eq!(run.stderr, "", "no warnings");
}

#[test]
fn missing_and_unusable_directories_are_errors() {
    let t = Test::new()
        .config(&format!(
            "{SERVICE}frontends:\n  fe: {{ reload: {{ signal: HUP, pidfile: run/missing/fe.pid }} }}\n\
             outputs:\n  - {{ template: \"builtin:nginx\", path: nope/out.conf, frontend: fe, vars: {{ service: web }} }}\n  \
             - {{ template: \"builtin:nginx\", path: afile/out.conf, vars: {{ service: web }} }}\n"
        ))
        .file("afile", "");
    let run = check(&t);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let dir = t.path_str();
    for expected in [
        format!(
            "error: config.yaml:8:40: output `{dir}/nope/out.conf`: directory `{dir}/nope` does not exist"
        ),
        format!(
            "error: config.yaml:9:40: output `{dir}/afile/out.conf`: `{dir}/afile` is not a directory"
        ),
        format!(
            "error: config.yaml:6:17: frontend `fe`: the directory of pidfile `{dir}/run/missing/fe.pid` does not exist"
        ),
    ] {
        assert!(run.stderr.contains(&expected), "{expected}\n{}", run.stderr);
    }
    // What render does with the same config: it fails on the directory.
    assert_eq!(t.render().run().code, 1);
}

#[test]
fn an_unwritable_output_directory_is_an_error() {
    use std::os::unix::fs::PermissionsExt;
    let t = Test::new().config(&format!(
        "{SERVICE}outputs:\n  - {{ template: \"builtin:nginx\", path: ro/out.conf, vars: {{ service: web }} }}\n"
    ));
    std::fs::create_dir(t.join("ro")).unwrap();
    std::fs::set_permissions(t.join("ro"), std::fs::Permissions::from_mode(0o555)).unwrap();
    // Root writes anywhere (and access(2) says so), so only an unprivileged user sees this.
    if nix::unistd::access(&t.join("ro"), nix::unistd::AccessFlags::W_OK).is_ok() {
        eprintln!("skipped: this user may write into a 0555 directory");
        return;
    }
    let run = check(&t);
    run.exited_saying(2, "is not writable");
}

#[test]
fn a_cron_expression_that_never_fires_is_an_error() {
    let t = Test::new().config(
        "services:\n  web:\n    refresh: \"0 0 0 31 2 *\"\n    port: 80\n    locators: [static: [\"127.0.0.1\"]]\noutputs: []\n",
    );
    let run = check(&t);
    run.exited_saying(
        2,
        "config.yaml:3:14: service `web`: cron `0 0 0 31 2 *` never fires",
    );
}

#[test]
fn an_unquoted_0o_mode_is_an_error_and_a_quoted_one_works() {
    let t = Test::new().config(&format!(
        "{SERVICE}outputs:\n  - {{ template: \"builtin:nginx\", path: out.conf, mode: 0o640, vars: {{ service: web }} }}\n"
    ));
    let run = check(&t);
    run.exited_saying(
        2,
        "config.yaml:6:56: unquoted, `0o640` is the number 416 to YAML; quote it (\"0o640\")",
    );
    assert_eq!(t.render().run().code, 2);
    assert!(!t.exists("out.conf"));
    t.write(
        "config.yaml",
        &t.read("config.yaml").replace("0o640", "\"0o640\""),
    );
    check(&t).success();
    t.render().run().success();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(t.join("out.conf"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o640);
}

#[test]
fn an_ipv6_address_that_swallowed_its_port_is_a_warning() {
    let t = Test::new().config(
        "services:\n  web:\n    port: 80\n    locators: [static: [\"2001:db8::1:8080\", \"[2001:db8::2]:8080\", \"fe80::1\"]]\noutputs: []\n",
    );
    let run = check(&t).success();
    assert_eq!(
        run.stderr.trim(),
        "warning: config.yaml:4:25: service `web`: static backend `2001:db8::1:8080` is the IPv6 address \
         2001:db8::1:8080 with no port; if 8080 is the port, write \"[2001:db8::1]:8080\" (or \
         \"[2001:db8::1:8080]\" to keep it as it is)"
    );
}

#[test]
fn the_example_config_passes_wherever_it_is_copied() {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.yaml.example"))
            .unwrap();
    // Its output goes to nginx's conf.d and it checks with nginx: a machine with nginx.
    support::program("nginx", "nginx");
    let t = Test::new().file("etc/elasticd/config.yaml", &example);
    std::fs::create_dir(t.join("elsewhere")).unwrap();
    let run = support::Cmd::new(&t.join("elsewhere"))
        .args(["check", "--config", "../etc/elasticd/config.yaml"])
        .run()
        .success();
    assert!(
        run.stdout.contains("OK (1 service, 1 frontend, 1 output)"),
        "{}",
        run.stdout
    );
}

/// `check`'s stderr for `config.yaml` = `text`.
fn problems(text: &str) -> String {
    let t = Test::new().config(text);
    let run = check(&t);
    assert_eq!(run.code, 2, "{}", run.stderr);
    run.stderr
}

#[test]
fn wrong_kinds_of_values_are_described_in_plain_words() {
    let cases = [
        (
            "port_out_of_range",
            "services:\n  web:\n    port: 70000\n    locators: [static: [\"127.0.0.1\"]]\noutputs: []\n",
        ),
        (
            "negative_count",
            "services:\n  web:\n    locators: [static: [\"127.0.0.1:80\"]]\n    guard: { min_backends: -1 }\noutputs: []\n",
        ),
        (
            "percent_ratio",
            "services:\n  web:\n    locators: [static: [\"127.0.0.1:80\"]]\n    guard: { max_removed_ratio: 50% }\noutputs: []\n",
        ),
        (
            "text_for_a_ratio_and_a_list_for_text",
            "daemon: { jitter: abc }\nservices:\n  web:\n    locators: [static: [\"127.0.0.1:80\"]]\noutputs:\n  - { template: \"builtin:nginx\", path: [a], vars: { service: web } }\n",
        ),
        (
            "a_number_for_settings",
            "services:\n  web:\n    locators: [exec: 5]\nfrontends:\n  fe: { reload: 5 }\noutputs: []\n",
        ),
    ];
    for (name, text) in cases {
        let stderr = problems(text);
        for rust in [
            "u16",
            "usize",
            "f64",
            "struct ",
            "invalid type",
            "invalid value",
        ] {
            assert!(!stderr.contains(rust), "{name}: {rust} in {stderr}");
        }
        insta::assert_snapshot!(name, stderr);
    }
}

#[test]
fn misindented_keys_get_a_hint_and_name_their_item() {
    // `guard:` moved left to the level of the service names.
    let stderr = problems(
        "services:\n  web:\n    locators: [static: [\"127.0.0.1:80\"]]\n  guard:\n    min_backends: 1\noutputs: []\n",
    );
    assert!(stderr.contains("service `guard`: "), "{stderr}");
    insta::assert_snapshot!("dedented_guard", stderr);
    // `path:` under the `f` of `- file:`, not under `file:`.
    let stderr = problems(
        "services:\n  web:\n    locators:\n      - file:\n        path: backends.json\noutputs: []\n",
    );
    assert!(
        stderr.contains("config.yaml:4:9: service `web`: "),
        "{stderr}"
    );
    insta::assert_snapshot!("file_then_path_at_the_same_indent", stderr);
}

#[test]
fn init_writes_a_starter_that_passes_check_for_each_frontend() {
    let snippets = [
        ("nginx", "nginx-site.conf", "proxy_pass http://web;"),
        ("haproxy", "haproxy-frontend.cfg", "default_backend web"),
        (
            "varnish",
            "default.vcl",
            "include \"/etc/varnish/web-backends.vcl\";",
        ),
        ("apache", "apache-site.conf", "balancer://web/"),
    ];
    for (frontend, snippet, line) in snippets {
        let t = Test::new();
        let run = t
            .elasticd(["init", frontend, "--dir", "starter"])
            .run()
            .success();
        assert!(run.stdout.contains("starter/config.yaml"), "{}", run.stdout);
        assert!(
            t.read(&format!("starter/{snippet}")).contains(line),
            "{frontend}"
        );
        let config = t.read("starter/config.yaml");
        assert!(config.starts_with("# elasticd for "), "{config}");
        // From that directory, as written, on this machine with the frontend installed.
        let check = support::Cmd::new(&t.join("starter"))
            .args(["check"])
            .env("PATH", support::path_with_sbin())
            .run();
        assert_eq!(check.code, 0, "{frontend}: {}", check.stderr);
        assert_eq!(
            check.stdout, "config.yaml: OK (1 service, 1 frontend, 1 output)\n",
            "{frontend}"
        );
        // A second init never replaces what the first wrote (or the operator edited).
        t.write("starter/config.yaml", "# edited\n");
        let again = t.elasticd(["init", frontend, "--dir", "starter"]).run();
        again.exited_saying(2, "already exists");
        assert_eq!(t.read("starter/config.yaml"), "# edited\n");
    }
}

#[test]
fn an_empty_config_asks_for_services_only() {
    let stderr = problems("");
    insta::assert_snapshot!("empty_config", stderr);
    // Outputs are not required: a config without them checks.
    let t = Test::new().config(SERVICE);
    assert_eq!(check(&t).code, 0);
}

#[test]
fn a_missing_template_is_named_by_its_file() {
    let t = Test::new().config(&format!(
        "{SERVICE}outputs:\n  - {{ template: tpl/missing.tera, path: out.conf, vars: {{ service: web }} }}\n"
    ));
    let run = check(&t);
    run.exited_saying(2, "tpl/missing.tera: cannot read it");
}
