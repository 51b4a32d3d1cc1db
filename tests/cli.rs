//! End-to-end tests of the `elasticd` binary: render, check and locate, and the failure paths
//! that must never let a broken or empty config reach a frontend.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Group, Test, poll_until, targets_json};

/// A config with one service read from `backends.json`, one nginx-template output and a frontend
/// whose reload appends a line to `reloads`.
fn file_config(check: &str, guard: &str) -> String {
    format!(
        r#"state_file: state.json
services:
  web:
    port: 8080
    locators:
      - file: {{ path: backends.json }}
    guard: {guard}
frontends:
  fe:
{check}
    reload: {{ command: [sh, -c, "echo reload >> reloads"] }}
outputs:
  - {{ template: "builtin:nginx", path: upstream.conf, frontend: fe, vars: {{ service: web }} }}
"#
    )
}

#[test]
fn version_is_printed() {
    let t = Test::new();
    let run = t.elasticd(["--version"]).run();
    assert_eq!(run.code, 0);
    assert!(run.stdout.starts_with("elasticd "), "{}", run.stdout);
}

#[test]
fn render_writes_once_reloads_once_and_then_does_nothing() {
    let t = Test::new().config(&file_config("", "{}"));
    t.write("backends.json", &targets_json(&["127.0.0.2", "127.0.0.1"]));

    t.render().run().success();
    let first = t.read("upstream.conf");
    assert!(first.find("127.0.0.1:8080").unwrap() < first.find("127.0.0.2:8080").unwrap());
    assert_eq!(t.reloads(), 1);
    let mtime = fs::metadata(t.join("upstream.conf"))
        .unwrap()
        .modified()
        .unwrap();

    // Same answer: no write, no reload.
    t.render().run().success();
    assert_eq!(t.reloads(), 1);
    assert_eq!(
        fs::metadata(t.join("upstream.conf"))
            .unwrap()
            .modified()
            .unwrap(),
        mtime
    );
    assert!(!t.join("upstream.conf.bak").exists());

    // A change: new file, the previous one kept as .bak, one reload.
    t.write("backends.json", &targets_json(&["127.0.0.1", "127.0.0.3"]));
    t.render().run().success();
    assert!(t.read("upstream.conf").contains("127.0.0.3:8080"));
    assert_eq!(t.read("upstream.conf.bak"), first);
    assert_eq!(t.reloads(), 2);
}

#[test]
fn dry_run_prints_a_diff_and_touches_nothing() {
    let t = Test::new()
        .config(&file_config("", "{}"))
        .file("backends.json", &targets_json(&["127.0.0.1"]));
    t.render().run().success();
    t.write("backends.json", &targets_json(&["127.0.0.1", "127.0.0.9"]));
    let before = t.read("upstream.conf");
    let state_before = t.read("state.json");

    let run = t.render().arg("--dry-run").run().success();
    assert!(run.stdout.contains("+++ b"), "{}", run.stdout);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with('+') && l.contains("127.0.0.9:8080")),
        "{}",
        run.stdout
    );
    assert_eq!(t.read("upstream.conf"), before);
    assert_eq!(t.read("state.json"), state_before);
    assert_eq!(t.reloads(), 1);
}

#[test]
fn no_reload_installs_without_reloading_and_the_reload_stays_owed() {
    let t = Test::new()
        .config(&file_config("", "{}"))
        .file("backends.json", &targets_json(&["127.0.0.1"]));
    t.render().arg("--no-reload").run().success();
    assert!(t.read("upstream.conf").contains("127.0.0.1:8080"));
    assert_eq!(t.reloads(), 0);
    // The next ordinary run delivers the reload the frontend still needs, once.
    t.render().run().success();
    assert_eq!(t.reloads(), 1);
    t.render().run().success();
    assert_eq!(t.reloads(), 1);
}

/// nginx.conf that includes the rendered upstream, for real `nginx -t` checks.
fn nginx_wrapper(d: &Path) -> String {
    format!(
        "pid {0}/nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{\n  client_body_temp_path {0}/cb;\n  \
         proxy_temp_path {0}/px;\n  fastcgi_temp_path {0}/fc;\n  uwsgi_temp_path {0}/uw;\n  scgi_temp_path {0}/sc;\n  \
         access_log off;\n  include {0}/upstream.conf;\n  server {{ listen 127.0.0.1:1; location / {{ proxy_pass http://web; }} }}\n}}\n",
        d.display()
    )
}

#[test]
fn a_failed_real_nginx_check_restores_the_old_file_and_skips_the_reload() {
    let t = Test::new();
    t.write("nginx.conf", &nginx_wrapper(t.path()));
    let check = format!(
        "    check: [nginx, -t, -q, -e, stderr, -p, \"{0}/\", -c, \"{0}/nginx.conf\"]",
        t.path().display()
    );
    t.write("config.yaml", &file_config(&check, "{}"));
    t.write("backends.json", &targets_json(&["127.0.0.1"]));
    t.render().run().success();
    assert_eq!(t.reloads(), 1);
    let good = t.read("upstream.conf");

    // A balance method nginx doesn't know: the rendered file is syntactically broken.
    let broken = file_config(&check, "{}").replace(
        "vars: { service: web }",
        "vars: { service: web, balance: bogus_method }",
    );
    t.write("config.yaml", &broken);
    t.write("backends.json", &targets_json(&["127.0.0.1", "127.0.0.2"]));
    let run = t.render().run();
    run.exited_saying(1, "check failed");
    assert!(run.stderr.contains("bogus_method"), "{}", run.stderr);
    assert_eq!(t.read("upstream.conf"), good, "old file restored");
    assert_eq!(t.reloads(), 1, "no reload after a failed check");
}

#[test]
fn a_staged_check_rejects_before_anything_is_installed() {
    let t = Test::new();
    // The whole haproxy config is the output; haproxy checks the staged copy.
    t.write(
        "haproxy.cfg.tera",
        "global\n  maxconn 100\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 1s\n  timeout server 1s\n\
         frontend fe\n  bind 127.0.0.1:1\n  default_backend web\n\
         {% include \"builtin-like.tera\" %}\n",
    );
    t.write(
        "builtin-like.tera",
        "backend web\n  balance {{ vars.balance }}\n{% for b in backends %}  server s{{ loop.index }} {{ b.endpoint }}\n{% endfor %}",
    );
    let config = |balance: &str| {
        format!(
            r#"services:
  web: {{ locators: [file: {{ path: backends.json }}], port: 80 }}
frontends:
  haproxy:
    check: [haproxy, -c, -f, "{{staged}}"]
    reload: {{ command: [sh, -c, "echo reload >> reloads"] }}
outputs:
  - {{ template: haproxy.cfg.tera, path: haproxy.cfg, frontend: haproxy, vars: {{ service: web, balance: {balance} }} }}
"#
        )
    };
    t.write("config.yaml", &config("roundrobin"));
    t.write("backends.json", &targets_json(&["127.0.0.1"]));
    t.render().run().success();
    let good = t.read("haproxy.cfg");
    assert!(good.contains("server s1 127.0.0.1:80"), "{good}");

    t.write("config.yaml", &config("no_such_algorithm"));
    t.write("backends.json", &targets_json(&["127.0.0.1", "127.0.0.2"]));
    let run = t.render().run();
    run.exited_saying(1, "balance only supports");
    assert!(
        run.stderr.contains("haproxy.cfg (staged copy)"),
        "{}",
        run.stderr
    );
    assert_eq!(t.read("haproxy.cfg"), good);
    assert_eq!(t.reloads(), 1);
    let leftovers: Vec<_> = fs::read_dir(t.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".elasticd-"))
        .collect();
    assert!(leftovers.is_empty(), "staged files left behind");
}

#[test]
fn exec_plugin_failures_keep_the_last_good_file() {
    let t = Test::new();
    t.write_executable(
        "plugin.sh",
        "#!/bin/sh\ncase \"$(cat mode)\" in\n  good) echo '[{\"targets\": [\"127.0.0.1:81\"]}]' ;;\n  \
         garbage) echo 'this is not json'; echo 'upstream API said no' >&2 ;;\n  \
         fail) echo 'boom: credentials expired' >&2; exit 3 ;;\n  \
         hang) sleep 30 ;;\nesac\n",
    );
    t.write(
        "config.yaml",
        r#"state_file: state.json
services:
  web:
    locators: [exec: { command: [./plugin.sh], timeout: 1s }]
outputs:
  - { template: "builtin:haproxy", path: backend.cfg, vars: { service: web } }
"#,
    );
    t.write("mode", "good");
    t.render().run().success();
    let good = t.read("backend.cfg");
    assert!(good.contains("127.0.0.1:81"), "{good}");

    for (mode, expect) in [
        ("garbage", "upstream API said no"),
        ("fail", "boom: credentials expired"),
        ("hang", "no answer within 1s"),
    ] {
        t.write("mode", mode);
        let started = Instant::now();
        let run = t.render().run();
        assert_eq!(run.code, 1, "{mode}: {}", run.stderr);
        assert!(run.stderr.contains(expect), "{mode}: {}", run.stderr);
        assert!(
            run.stderr.contains("plugin.sh"),
            "{mode}: names the plugin: {}",
            run.stderr
        );
        assert_eq!(t.read("backend.cfg"), good, "{mode}: last good file kept");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{mode}: timeout enforced"
        );
    }
}

#[test]
fn the_guard_holds_on_empty_and_shrunken_answers() {
    let t = Test::new();
    t.write(
        "config.yaml",
        &file_config("", "{ min_backends: 1, max_removed_ratio: 0.5 }"),
    );
    let four = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"];
    t.write("backends.json", &targets_json(&four));
    t.render().run().success();
    let good = t.read("upstream.conf");

    t.write("backends.json", "[]");
    let run = t.render().run();
    run.exited_saying(1, "guard held");
    assert!(
        run.stderr.contains("fewer than min_backends 1"),
        "{}",
        run.stderr
    );
    assert_eq!(t.read("upstream.conf"), good);

    t.write("backends.json", &targets_json(&["127.0.0.1"]));
    let run = t.render().run();
    run.exited_saying(1, "3 of 4 backends would be removed");
    assert_eq!(t.read("upstream.conf"), good);
    assert_eq!(t.reloads(), 1);

    // Losing half is within the ratio.
    t.write("backends.json", &targets_json(&four[..2]));
    t.render().run().success();
    assert!(!t.read("upstream.conf").contains("127.0.0.3"));
}

#[test]
fn a_service_with_no_good_set_leaves_its_output_alone() {
    let t = Test::new()
        .config(&file_config("", "{}"))
        .file("upstream.conf", "# hand-made, must survive\n");
    // No backends.json at all: the locator fails and nothing was ever good.
    let run = t.render().run();
    run.exited_saying(1, "backends.json");
    assert_eq!(t.read("upstream.conf"), "# hand-made, must survive\n");
    assert_eq!(t.reloads(), 0);
}

#[test]
fn a_failed_reload_is_retried_on_the_next_run() {
    // With a state file, and without one: the installed file's owed marker says it too.
    for state_file in [true, false] {
        let t = Test::new();
        let mut config = file_config("", "{}").replace(
            "echo reload >> reloads",
            "echo try >> reloads; test -e reload-ok || { echo frontend is down >&2; exit 1; }",
        );
        if !state_file {
            config = config.replace("state_file: state.json\n", "");
        }
        t.write("config.yaml", &config);
        t.write("backends.json", &targets_json(&["127.0.0.1"]));
        let run = t.render().run();
        run.exited_saying(1, "frontend is down");
        assert!(
            run.stderr.contains(
                "reload failed; the files are installed, and the next `elasticd render` reloads again"
            ),
            "{}",
            run.stderr
        );
        assert_eq!(t.reloads(), 1);

        // The file is already up to date, but the reload is still owed.
        t.write("reload-ok", "");
        let run = t.render().run();
        assert_eq!(run.code, 0, "state_file {state_file}: {}", run.stderr);
        assert_eq!(t.reloads(), 2, "state_file {state_file}: {}", run.stderr);
        t.render().run().success();
        assert_eq!(t.reloads(), 2, "nothing owed any more");
        assert_eq!(t.exists("state.json"), state_file);
    }
}

#[test]
fn signal_reload_reaches_the_process_in_the_pidfile() {
    let t = Test::new();
    let mut frontend = Command::new("sh");
    frontend
        .arg("-c")
        .arg("trap 'echo hup >> reloads' HUP; echo $$ > frontend.pid; while :; do sleep 0.05; done")
        .current_dir(t.path());
    let _frontend = Group::spawn("the frontend", frontend, &t.join("frontend.log"));
    poll_until(Duration::from_secs(5), || {
        !t.read("frontend.pid").trim().is_empty()
    });
    let config = file_config("", "{}").replace(
        "reload: { command: [sh, -c, \"echo reload >> reloads\"] }",
        "reload: { signal: HUP, pidfile: frontend.pid }",
    );
    t.write("config.yaml", &config);
    t.write("backends.json", &targets_json(&["127.0.0.1"]));
    t.render().run().success();
    poll_until(Duration::from_secs(5), || t.reloads() != 0);
    assert_eq!(t.reloads(), 1);

    t.write("frontend.pid", "999999999\n");
    t.write("backends.json", &targets_json(&["127.0.0.2"]));
    let run = t.render().run();
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("frontend.pid"), "{}", run.stderr);
}

#[test]
fn bad_configs_exit_2_and_list_every_problem() {
    let t = Test::new();
    t.write(
        "config.yaml",
        "services:\n  web:\n    locators: [static: [\"10.0.0.1:99999\"], exec: { command: [] }]\n    gaurd: {}\n\
         outputs:\n  - { template: \"builtin:nginx\", path: a.conf, vars: { service: api } }\n",
    );
    for command in ["render", "check", "locate"] {
        let run = t.elasticd([command, "--config", "config.yaml"]).run();
        assert_eq!(run.code, 2, "{command}: {}", run.stderr);
        assert!(run.stderr.contains("config.yaml:3:"), "{}", run.stderr);
        assert!(run.stderr.contains("config.yaml:6:"), "{}", run.stderr);
    }
    insta::assert_snapshot!(
        t.elasticd(["check", "--config", "config.yaml"])
            .run()
            .stderr
            .replace(&t.path().display().to_string(), "DIR")
    );
    assert!(!t.join("a.conf").exists());
}

#[test]
fn config_path_comes_from_the_environment_or_the_default() {
    let t = Test::new();
    let run = t.elasticd(["check"]).run();
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("config.yaml"), "{}", run.stderr);
    t.write(
        "other.yaml",
        "services: { web: { locators: [static: [\"127.0.0.1:80\"]] } }\noutputs: []\n",
    );
    let out = t
        .elasticd(["check"])
        .env("ELASTICD_CONFIG", "other.yaml")
        .run();
    assert!(out.code == 0, "{}", out.stderr);
}

#[test]
fn check_finds_missing_programs_and_broken_templates() {
    let t = Test::new().file("broken.tera", "{% if %}");
    t.write(
        "config.yaml",
        r#"services:
  web: { locators: [static: ["127.0.0.1:80"]] }
frontends:
  fe: { check: [no-such-checker-elasticd, -t], reload: { command: [./no-such-reload] } }
outputs:
  - { template: broken.tera, path: out.conf, frontend: fe, vars: { service: web } }
"#,
    );
    let run = t.elasticd(["check", "--config", "config.yaml"]).run();
    assert_eq!(run.code, 2, "{}", run.stderr);
    for expected in ["broken.tera", "no-such-checker-elasticd", "no-such-reload"] {
        assert!(run.stderr.contains(expected), "{expected}: {}", run.stderr);
    }
    assert!(!t.join("out.conf").exists());

    // A missing plugin is found when the config is loaded, by every command.
    t.write(
        "config.yaml",
        "services:\n  web: { locators: [exec: { command: [./no-such-plugin] }] }\noutputs: []\n",
    );
    let run = t.elasticd(["check", "--config", "config.yaml"]).run();
    run.exited_saying(2, "config.yaml:2:39");
    assert!(run.stderr.contains("no-such-plugin"), "{}", run.stderr);
}

#[test]
fn locate_prints_a_table_and_json() {
    let t = Test::new();
    t.write(
        "config.yaml",
        r#"services:
  web:
    port: 80
    locators:
      - static: ["127.0.0.2", { address: "::1", name: "six\nlines", weight: 3 }]
      - file: { path: more.json }
  api:
    locators: [static: ["127.0.0.9:9000"]]
outputs: []
"#,
    );
    t.write("more.json", &targets_json(&["127.0.0.1:81"]));
    let run = t
        .elasticd(["locate", "--config", "config.yaml"])
        .run()
        .success();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("SERVICE"), "{}", run.stdout);
    assert_eq!(lines.len(), 5, "{}", run.stdout);
    assert!(lines[1].contains("127.0.0.1:81"), "{}", run.stdout);
    assert!(run.stdout.contains("six\\nlines"), "{}", run.stdout);

    let run = t
        .elasticd(["locate", "--config", "config.yaml", "web", "--json"])
        .run()
        .success();
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["web"].as_array().unwrap().len(), 3);
    assert!(json.get("api").is_none());
    assert_eq!(json["web"][2]["address"], "::1");
    assert_eq!(json["web"][2]["weight"], 3);

    let run = t
        .elasticd(["locate", "--config", "config.yaml", "nope"])
        .run();
    assert_eq!(run.code, 2);
}

#[test]
fn output_mode_is_applied() {
    use std::os::unix::fs::PermissionsExt;
    let t = Test::new();
    t.write(
        "config.yaml",
        "services: { web: { locators: [static: [\"127.0.0.1:80\"]] } }\n\
         outputs: [{ template: \"builtin:apache\", path: out.conf, mode: \"0600\", vars: { service: web } }]\n",
    );
    t.render().run().success();
    let mode = fs::metadata(t.join("out.conf"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn the_demo_renders_without_any_cloud() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let t = Test::new();
    // Copy the demo so the test never writes into the source tree.
    let demo = root.join("examples/demo");
    for entry in fs::read_dir(&demo).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            fs::copy(entry.path(), t.join(entry.file_name())).unwrap();
        }
    }
    fs::create_dir(t.join("out")).unwrap();
    t.render().run().success();
    for file in [
        "nginx-web.conf",
        "haproxy-web.cfg",
        "varnish-web.vcl",
        "apache-web.conf",
    ] {
        assert!(
            t.read(&format!("out/{file}")).contains("127.0.0.1"),
            "{file}"
        );
    }
    // Output is deterministic, including the custom template that loops over a map: a second
    // run rewrites nothing (no file gets a .bak).
    t.render().run().success();
    let backups: Vec<_> = fs::read_dir(t.join("out"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".bak"))
        .map(|e| e.file_name())
        .collect();
    assert!(backups.is_empty(), "rewritten: {backups:?}");
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let t = Test::new().config(
        "services:\n  web:\n    locators: [static: [\"127.0.0.1:80\"]]\noutputs:\n  - { template: \"builtin:nginx\", path: web.conf, vars: { service: web } }\n",
    );
    // NO_COLOR is what the test harness sets for every run; without it, a pipe alone must
    // still get plain text.
    let run = t.render().env_remove("NO_COLOR").run();
    run.exited_saying(0, "INFO");
    assert!(!run.stderr.contains('\x1b'), "{:?}", run.stderr);
}

/// Every stderr line as a JSON object with exactly the documented keys.
fn json_records(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\n{stderr}"));
            let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(keys, ["fields", "level", "message", "timestamp"], "{line}");
            assert!(line.starts_with(r#"{"timestamp":""#), "{line}");
            v
        })
        .collect()
}

#[test]
fn json_logs_are_one_object_per_line_and_values_cannot_forge_records() {
    let t = Test::new().config(
        "services:\n  web:\n    locators: [file: { path: backends.json }]\n    guard: { min_backends: 0 }\noutputs:\n  - { template: \"builtin:nginx\", path: web.conf, vars: { service: web } }\n",
    );
    // A target that tries to end the record and start a forged one, with a colour escape.
    t.write(
        "backends.json",
        r#"[{"targets": ["127.0.0.1:80", "bad\n{\"level\":\"INFO\",\"message\":\"forged\"}\u001b[31m\u202e"]}]"#,
    );
    let run = t.render().args(["--log-format", "json"]).run();
    assert_eq!(run.code, 1, "{}", run.stderr);
    let records = json_records(&run.stderr);
    assert!(
        !run.stderr.contains('\x1b') && run.stderr.is_ascii(),
        "{:?}",
        run.stderr
    );
    let error = records
        .iter()
        .find(|r| r["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no ERROR record:\n{}", run.stderr));
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("\n{\"level\":\"INFO\",\"message\":\"forged\"}\u{1b}[31m\u{202e}"),
        "{message}"
    );
    assert!(records.iter().all(|r| r["message"] != "forged"));
    // The timestamp is RFC 3339 UTC, fields carry the service.
    let ts = records[0]["timestamp"].as_str().unwrap();
    assert!(ts.ends_with('Z') && ts.contains('T'), "{ts}");

    // The same from the environment, for the daemon; its start-up line keeps its field.
    let t = Test::new().config(
        "services:\n  web:\n    locators: [static: [\"127.0.0.1:80\"]]\noutputs:\n  - { template: \"builtin:nginx\", path: web.conf, vars: { service: web } }\n",
    );
    let mut daemon = t
        .elasticd(["run", "--config", "config.yaml"])
        .env("ELASTICD_LOG_FORMAT", "json")
        .daemon();
    daemon.wait_for_log("the applied line", Duration::from_secs(30), |log| {
        log.contains("\"message\":\"applied web")
    });
    let code = daemon.stop_with(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10));
    assert_eq!(code, Some(0));
    let records = json_records(&daemon.log());
    let started = records
        .iter()
        .find(|r| {
            r["message"]
                .as_str()
                .unwrap()
                .starts_with("started: 1 service")
        })
        .unwrap_or_else(|| panic!("no start-up record:\n{}", daemon.log()));
    assert_eq!(started["level"], "INFO");
    assert_eq!(started["fields"]["config"], "config.yaml");
}

#[test]
fn a_log_filter_that_does_not_parse_is_an_error() {
    let t = Test::new().config("services: {}\noutputs: []\n");
    let run = t.elasticd(["--log", "elasticd=[", "check"]).run();
    assert_eq!(run.code, 2, "{}", run.stderr);
    insta::assert_snapshot!(run.stderr);
    let run = t.elasticd(["check"]).env("RUST_LOG", "=bogus=").run();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.starts_with("error: RUST_LOG: "),
        "{}",
        run.stderr
    );
    let run = t.elasticd(["--log-format", "yaml", "check"]).run();
    run.exited_saying(2, "[possible values: text, json]");
}

#[test]
fn help_names_signals_exit_codes_and_docs_and_version_names_features() {
    let t = Test::new();
    let help = t.elasticd(["--help"]).run().success().stdout;
    for want in [
        "SIGHUP",
        "SIGUSR1",
        "SIGTERM",
        "Exit status:",
        "man elasticd",
        "docs/",
    ] {
        assert!(help.contains(want), "{want} missing from --help:\n{help}");
    }
    let after = &help[help.find("Signals (elasticd run):").unwrap()..];
    insta::assert_snapshot!(after);
    let version = t.elasticd(["--version"]).run().success().stdout;
    // Written out per feature rather than built like the binary builds it, so that a feature
    // left out of the string fails here.
    let features = match (cfg!(feature = "aws"), cfg!(feature = "etcd")) {
        (true, true) => "(features: aws, etcd)",
        (true, false) => "(features: aws)",
        (false, true) => "(features: etcd)",
        (false, false) => "(features: none)",
    };
    assert_eq!(
        version.trim(),
        format!("elasticd {} {features}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_man_page_and_completions_come_from_the_command_line_definition() {
    let t = Test::new();
    let man = t.elasticd(["generate", "man"]).run().success().stdout;
    assert!(man.contains(".TH elasticd 1"), "{man}");
    // Every subcommand and global option, and the signals, are in it; the hidden one is not.
    for want in ["render", "check", "locate", "\\-\\-log\\-format", "SIGHUP"] {
        assert!(man.contains(want), "{want} missing from the man page");
    }
    assert!(!man.contains("generate"), "{man}");
    // groff renders it without a warning.
    t.write("elasticd.1", &man);
    let groff = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z", "elasticd.1"])
        .current_dir(t.path())
        .output()
        .expect("groff (Debian package groff-base)");
    assert!(groff.status.success(), "{groff:?}");
    assert_eq!(String::from_utf8_lossy(&groff.stderr), "");

    for shell in ["bash", "zsh", "fish"] {
        let script = t
            .elasticd(["generate", "completions", shell])
            .run()
            .success()
            .stdout;
        for word in ["render", "locate", "log-format"] {
            assert!(script.contains(word), "{shell}: {word} missing");
        }
        // Each shell parses its script without running it, where that shell is installed.
        let path = t.join(format!("elasticd.{shell}"));
        fs::write(&path, &script).unwrap();
        match Command::new(shell).arg("-n").arg(&path).output() {
            Ok(out) => assert!(out.status.success(), "{shell} -n: {out:?}"),
            Err(e) if shell != "bash" => println!("{shell} not installed ({e}); not parsed"),
            Err(e) => panic!("bash: {e}"),
        }
    }
    // bash: the completion offers the subcommands after `elasticd `.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(elasticd ''); COMP_CWORD=1; _elasticd elasticd '' elasticd; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            t.join("elasticd.bash").display()
        ))
        .output()
        .unwrap();
    let offered = String::from_utf8_lossy(&out.stdout);
    for sub in ["run", "render", "check", "locate"] {
        assert!(
            offered.lines().any(|l| l == sub),
            "{sub} not offered: {offered}"
        );
    }
    let run = t.elasticd(["generate", "completions", "tcsh"]).run();
    assert_eq!(run.code, 2, "{}", run.stderr);
}
