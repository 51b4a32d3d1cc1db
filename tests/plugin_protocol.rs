//! The plugin protocol (plugins/README.md, protocol 1) through the binary: the request on stdin,
//! the environment, plugin lookup, and every failure mode of locator, renderer and action
//! plugins: each a clear error naming the plugin, with nothing applied and the last good kept.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

struct Run {
    code: i32,
    stderr: String,
}

fn elasticd_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_elasticd"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("ELASTICD_CONFIG")
        .env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out: Output = cmd.output().expect("run elasticd");
    Run {
        code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn render(dir: &Path) -> Run {
    elasticd_env(dir, &["render", "--config", "config.yaml"], &[])
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// Writes an executable script.
fn plugin(dir: &Path, name: &str, body: &str) {
    write(dir, name, body);
    fs::set_permissions(dir.join(name), fs::Permissions::from_mode(0o755)).unwrap();
}

fn read(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name)).unwrap_or_default()
}

fn json(dir: &Path, name: &str) -> serde_json::Value {
    serde_json::from_str(&read(dir, name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The `error:` lines of elasticd's stderr (with their continuation lines), temp dir redacted.
fn errors(run: &Run, dir: &Path) -> String {
    let mut out = Vec::new();
    let mut inside = false;
    for line in run.stderr.lines() {
        if line.starts_with("error:") {
            inside = true;
        } else if !(inside && (line.starts_with(' ') || line.is_empty())) {
            inside = false;
        }
        if inside {
            out.push(line);
        }
    }
    let dir = fs::canonicalize(dir).unwrap();
    out.join("\n").replace(&dir.display().to_string(), "DIR")
}

/// Waits for a pid written by a plugin's child to be gone (or a zombie).
fn assert_gone(pid_file: &Path) {
    let pid: i32 = fs::read_to_string(pid_file)
        .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()))
        .trim()
        .parse()
        .unwrap();
    for _ in 0..250 {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.contains(") Z ") {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("process {pid} started by the plugin survived its timeout");
}

/// The body of a locator plugin that behaves as the file `mode` says.
const MODAL_LOCATOR: &str = r#"#!/bin/sh
case "$(cat mode)" in
  good) echo '[{"targets": ["127.0.0.1:81"]}]' ;;
  garbage) echo 'this is not json'; echo 'upstream API said no' >&2 ;;
  badbackend) echo '[{"targets": ["10.0.0.1;rm"]}]' ;;
  huge) head -c 70000000 /dev/zero ;;
  hang) sleep 60 & echo $! > child.pid; echo 'waiting for the API' >&2; wait ;;
  segv) echo 'about to crash' >&2; kill -SEGV $$ ;;
  exit3) echo 'credentials expired' >&2; exit 3 ;;
esac
"#;

#[test]
fn locator_request_environment_and_options() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    plugin(
        d,
        "plugins/locators/dump",
        "#!/bin/sh\ncat > request.json\nenv > env.txt\necho \"$@\" > args.txt\n\
         echo '[{\"address\": \"127.0.0.2\", \"weight\": 3, \"name\": \"two\", \"tags\": {\"az\": \"a\"}}]'\n",
    );
    write(
        d,
        "config.yaml",
        r#"environment: prod
services:
  web:
    port: 8080
    locators:
      - exec:
          command: [dump, --flag, "two words"]
          options: { namespace: shop, replicas: 3, nested: { list: [1, 2] } }
          pass_env: [ELASTICD_TEST_PASS*]
          env: { FROM_CONFIG: "yes" }
outputs:
  - { template: "builtin:haproxy", path: backend.cfg, vars: { service: web } }
"#,
    );
    let run = elasticd_env(
        d,
        &["render", "--config", "config.yaml"],
        &[
            ("ELASTICD_TEST_SECRET", "must not leak"),
            ("ELASTICD_TEST_PASS_ME", "passed"),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(read(d, "backend.cfg").contains("127.0.0.2:8080"));
    assert!(read(d, "backend.cfg").contains("weight 3"));
    assert_eq!(
        json(d, "request.json"),
        serde_json::json!({
            "protocol": 1,
            "kind": "locator",
            "environment": "prod",
            "options": {"namespace": "shop", "replicas": 3, "nested": {"list": [1, 2]}},
            "service": "web",
            "default_port": 8080
        })
    );
    assert_eq!(read(d, "args.txt"), "--flag two words\n");
    let env = read(d, "env.txt");
    let canonical = fs::canonicalize(d).unwrap();
    for expected in [
        "ELASTICD_TEST_PASS_ME=passed".to_string(),
        "FROM_CONFIG=yes".into(),
        "ELASTICD_SERVICE=web".into(),
        "ELASTICD_PLUGIN_KIND=locator".into(),
        "ELASTICD_PLUGIN_PROTOCOL=1".into(),
        "ELASTICD_ENVIRONMENT=prod".into(),
        format!("ELASTICD_CONFIG_DIR={}", canonical.display()),
    ] {
        assert!(
            env.lines().any(|l| l == expected),
            "{expected} missing:\n{env}"
        );
    }
    assert!(!env.contains("must not leak"), "{env}");
    assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
}

#[test]
fn plugins_are_found_in_the_kind_dir_then_the_plugin_dir_then_path() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let answer = |ip: &str| format!("#!/bin/sh\necho '[{{\"targets\": [\"{ip}:80\"]}}]'\n");
    plugin(d, "custom/where", &answer("127.0.0.2"));
    plugin(d, "custom/locators/where", &answer("127.0.0.3"));
    // The default directory is not searched when `plugin_dir` is set.
    plugin(d, "plugins/locators/where", &answer("127.0.0.4"));
    write(
        d,
        "config.yaml",
        r#"plugin_dir: custom
services:
  web: { locators: [exec: { command: [where] }] }
outputs:
  - { template: "builtin:haproxy", path: backend.cfg, vars: { service: web } }
"#,
    );
    let run = render(d);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(read(d, "backend.cfg").contains("127.0.0.3:80"));
    fs::remove_file(d.join("custom/locators/where")).unwrap();
    let run = render(d);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(read(d, "backend.cfg").contains("127.0.0.2:80"));
    // A path is relative to the config directory and skips the lookup.
    write(
        d,
        "config.yaml",
        r#"services:
  web: { locators: [exec: { command: [plugins/locators/where] }] }
outputs:
  - { template: "builtin:haproxy", path: backend.cfg, vars: { service: web } }
"#,
    );
    let run = render(d);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(read(d, "backend.cfg").contains("127.0.0.4:80"));
}

#[test]
fn locator_failures_name_the_plugin_and_keep_the_last_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    plugin(d, "plugins/locators/modal", MODAL_LOCATOR);
    write(
        d,
        "config.yaml",
        r#"state_file: state.json
services:
  web:
    locators: [exec: { command: [modal], timeout: 1s }]
frontends:
  fe:
    reload: { command: [sh, -c, "echo reload >> reloads"] }
outputs:
  - { template: "builtin:haproxy", path: backend.cfg, frontend: fe, vars: { service: web } }
"#,
    );
    write(d, "mode", "good");
    let run = render(d);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let good = read(d, "backend.cfg");
    assert!(good.contains("127.0.0.1:81"), "{good}");
    assert_eq!(read(d, "reloads").lines().count(), 1);

    let mut messages = Vec::new();
    for mode in ["garbage", "badbackend", "huge", "hang", "segv", "exit3"] {
        write(d, "mode", mode);
        let run = render(d);
        assert_eq!(run.code, 1, "{mode}: {}", run.stderr);
        let shown = errors(&run, d);
        assert!(
            shown.contains("locator plugin `modal` (DIR/plugins/locators/modal)"),
            "{mode}: names the plugin: {shown}"
        );
        assert_eq!(read(d, "backend.cfg"), good, "{mode}: last good file kept");
        assert_eq!(read(d, "reloads").lines().count(), 1, "{mode}: no reload");
        if mode == "hang" {
            assert_gone(&d.join("child.pid"));
        }
        messages.push(format!("--- {mode}\n{shown}"));
    }
    insta::assert_snapshot!(messages.join("\n"));
}

#[test]
fn missing_and_non_executable_plugins_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "plugins/locators/noexec", "#!/bin/sh\necho '[]'\n");
    // Not executable, and shadowing the `true` on PATH: an error, not a fallback.
    write(d, "plugins/actions/true", "#!/bin/sh\n");
    write(d, "backend.cfg", "previous\n");
    write(
        d,
        "config.yaml",
        r#"services:
  web: { locators: [exec: { command: [noexec] }] }
  api: { locators: [exec: { command: [no-such-plugin-elasticd] }] }
  db: { locators: [exec: { command: [./bin/missing] }], on_change: [exec: [no-such-hook-elasticd]] }
frontends:
  fe: { reload: { exec: [no-such-reload-elasticd] } }
  other: { reload: { exec: [x], command: [y] } }
  third: { reload: { exec: ["true"] } }
outputs:
  - { template: "builtin:haproxy", path: backend.cfg, vars: { service: web } }
  - { renderer: { exec: [no-such-renderer-elasticd] }, path: b.cfg }
  - { renderer: { exec: [x] }, template: "builtin:nginx", path: c.cfg }
  - { path: d.cfg }
"#,
    );
    for command in ["render", "check", "locate"] {
        let run = elasticd_env(d, &[command, "--config", "config.yaml"], &[]);
        assert_eq!(run.code, 2, "{command}: {}", run.stderr);
    }
    assert_eq!(read(d, "backend.cfg"), "previous\n");
    insta::assert_snapshot!(errors(&render(d), d));
}

/// The body of a renderer plugin that behaves as the file `mode` says; it dumps its request.
const MODAL_RENDERER: &str = r#"#!/bin/sh
cat > render-request.json
env > render-env.txt
case "$(cat mode)" in
  good) printf 'rendered by plugin\nno newline at the end' ;;
  binary) printf 'caf\351\n' ;;
  huge) head -c 70000000 /dev/zero ;;
  hang) sleep 60 & echo $! > child.pid; wait ;;
  segv) echo 'about to crash' >&2; kill -SEGV $$ ;;
  exit3) echo 'cannot reach the template service' >&2; exit 3 ;;
esac
"#;

const RENDERER_CONFIG: &str = r#"environment: staging
state_file: state.json
services:
  web:
    port: 8080
    locators: [file: { path: backends.json }]
frontends:
  fe:
    check: [sh, -c, "echo check >> checks"]
    reload: { command: [sh, -c, "echo reload >> reloads"] }
outputs:
  - { template: "builtin:haproxy", path: backend.cfg, frontend: fe, vars: { service: web } }
  - renderer: { exec: [modal], timeout: 1s, options: { cluster: web, retries: 2 } }
    path: out/envoy.json
    frontend: fe
    vars: { service: web, flavour: envoy }
"#;

#[test]
fn renderer_gets_the_template_context_and_its_output_is_installed_verbatim() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    plugin(d, "plugins/renderers/modal", MODAL_RENDERER);
    write(d, "config.yaml", RENDERER_CONFIG);
    write(d, "mode", "good");
    write(
        d,
        "backends.json",
        r#"[{"targets": ["127.0.0.2", "127.0.0.1:81"], "labels": {"zone": "a"}}]"#,
    );
    fs::create_dir_all(d.join("out")).unwrap();
    let check = elasticd_env(d, &["check", "--config", "config.yaml"], &[]);
    assert_eq!(check.code, 0, "{}", check.stderr);
    assert!(
        !d.join("render-request.json").exists(),
        "check runs no plugin"
    );
    let run = render(d);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        read(d, "out/envoy.json"),
        "rendered by plugin\nno newline at the end"
    );
    assert_eq!(read(d, "reloads").lines().count(), 1);
    let request = json(d, "render-request.json");
    let out = fs::canonicalize(d).unwrap().join("out/envoy.json");
    assert_eq!(request["protocol"], 1);
    assert_eq!(request["kind"], "renderer");
    assert_eq!(request["environment"], "staging");
    assert_eq!(
        request["options"],
        serde_json::json!({"cluster": "web", "retries": 2})
    );
    assert_eq!(request["output"], out.display().to_string());
    assert_eq!(request["frontend"], "fe");
    let context = &request["context"];
    assert_eq!(context["environment"], "staging");
    assert_eq!(
        context["vars"],
        serde_json::json!({"service": "web", "flavour": "envoy"})
    );
    assert_eq!(context["service"]["name"], "web");
    assert_eq!(context["service"]["port"], 8080);
    assert_eq!(
        context["backends"][0],
        serde_json::json!({"address": "127.0.0.1", "port": 81, "endpoint": "127.0.0.1:81",
            "weight": 1, "id": null, "name": null, "zone": null, "tags": {"zone": "a"}, "meta": {},
            "is_ipv6": false})
    );
    assert_eq!(context["backends"][1]["endpoint"], "127.0.0.2:8080");
    assert_eq!(context["services"]["web"]["backends"], context["backends"]);
    let env = read(d, "render-env.txt");
    for expected in [
        format!("ELASTICD_OUTPUT={}", out.display()),
        "ELASTICD_FRONTEND=fe".into(),
        "ELASTICD_PLUGIN_KIND=renderer".into(),
        "ELASTICD_ENVIRONMENT=staging".into(),
    ] {
        assert!(env.lines().any(|l| l == expected), "{expected}:\n{env}");
    }
    // Dry runs run renderers (to show the diff) but nothing else.
    write(d, "backends.json", r#"[{"targets": ["127.0.0.3:80"]}]"#);
    let dry = elasticd_env(d, &["render", "--config", "config.yaml", "--dry-run"], &[]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert_eq!(
        json(d, "render-request.json")["context"]["backends"][0]["address"],
        "127.0.0.3"
    );
    assert_eq!(read(d, "reloads").lines().count(), 1);
    assert!(!read(d, "backend.cfg").contains("127.0.0.3"));
}

#[test]
fn renderer_failures_leave_the_whole_frontend_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    plugin(d, "plugins/renderers/modal", MODAL_RENDERER);
    write(d, "config.yaml", RENDERER_CONFIG);
    write(d, "mode", "good");
    write(d, "backends.json", r#"[{"targets": ["127.0.0.1:81"]}]"#);
    fs::create_dir_all(d.join("out")).unwrap();
    let run = render(d);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let good_plugin = read(d, "out/envoy.json");
    let good_template = read(d, "backend.cfg");
    let checks = read(d, "checks").lines().count();
    assert_eq!(read(d, "reloads").lines().count(), 1);

    // The backends change, so the template output would change too: it must not be installed
    // while its sibling from the plugin is missing.
    write(d, "backends.json", r#"[{"targets": ["127.0.0.2:81"]}]"#);
    let mut messages = Vec::new();
    for mode in ["binary", "huge", "hang", "segv", "exit3"] {
        write(d, "mode", mode);
        let run = render(d);
        assert_eq!(run.code, 1, "{mode}: {}", run.stderr);
        let shown = errors(&run, d);
        assert!(
            shown.contains("renderer plugin `modal` (DIR/plugins/renderers/modal)"),
            "{mode}: {shown}"
        );
        assert_eq!(read(d, "out/envoy.json"), good_plugin, "{mode}");
        assert_eq!(read(d, "backend.cfg"), good_template, "{mode}");
        assert_eq!(
            read(d, "checks").lines().count(),
            checks,
            "{mode}: not checked"
        );
        assert_eq!(
            read(d, "reloads").lines().count(),
            1,
            "{mode}: not reloaded"
        );
        if mode == "hang" {
            assert_gone(&d.join("child.pid"));
        }
        messages.push(format!("--- {mode}\n{shown}"));
    }
    insta::assert_snapshot!(messages.join("\n"));

    // Once the plugin works again, both files go in together.
    write(d, "mode", "good");
    let run = render(d);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(read(d, "backend.cfg").contains("127.0.0.2:81"));
    assert_eq!(read(d, "reloads").lines().count(), 2);
}

/// The body of an action plugin that behaves as the file `<name>.mode` says, dumps its request
/// and environment, and appends a line to `<name>.done` when it succeeds.
fn modal_action(name: &str) -> String {
    format!(
        r#"#!/bin/sh
cat > {name}.request.json
env > {name}.env.txt
case "$(cat {name}.mode)" in
  good) echo 'chatty stdout is ignored'; echo done >> {name}.done ;;
  huge) head -c 2000000 /dev/zero ;;
  hang) sleep 60 & echo $! > child.pid; wait ;;
  segv) echo 'about to crash' >&2; kill -SEGV $$ ;;
  exit3) echo 'API refused the change' >&2; exit 3 ;;
esac
"#
    )
}

#[test]
fn reload_plugin_gets_the_change_and_is_owed_until_it_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    plugin(d, "plugins/actions/reloader", &modal_action("reloader"));
    write(
        d,
        "config.yaml",
        r#"state_file: state.json
services:
  web:
    locators: [file: { path: backends.json }]
frontends:
  fe:
    reload: { exec: [reloader, --graceful], timeout: 1s, options: { admin: "127.0.0.1:9901" } }
outputs:
  - { template: "builtin:haproxy", path: backend.cfg, frontend: fe, vars: { service: web } }
"#,
    );
    write(d, "reloader.mode", "good");
    write(
        d,
        "backends.json",
        r#"[{"targets": ["127.0.0.1:80", "127.0.0.2:80"]}]"#,
    );
    let run = render(d);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(read(d, "reloader.done").lines().count(), 1);

    write(
        d,
        "backends.json",
        r#"[{"targets": ["127.0.0.2:80", "127.0.0.3:80"]}]"#,
    );
    let run = render(d);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(read(d, "reloader.done").lines().count(), 2);
    let request = json(d, "reloader.request.json");
    let canonical = fs::canonicalize(d).unwrap();
    assert_eq!(request["protocol"], 1);
    assert_eq!(request["kind"], "action");
    assert_eq!(request["event"], "reload");
    assert_eq!(request["frontend"], "fe");
    assert_eq!(request["environment"], serde_json::Value::Null);
    assert_eq!(
        request["options"],
        serde_json::json!({"admin": "127.0.0.1:9901"})
    );
    let change = &request["changes"][0];
    assert_eq!(change["service"], "web");
    assert_eq!(change["added"][0]["address"], "127.0.0.3");
    assert_eq!(change["removed"][0]["address"], "127.0.0.1");
    assert_eq!(change["backends"].as_array().unwrap().len(), 2);
    assert_eq!(
        request["outputs"],
        serde_json::json!([{"path": canonical.join("backend.cfg"), "frontend": "fe"}])
    );
    let env = read(d, "reloader.env.txt");
    for expected in [
        "ELASTICD_FRONTEND=fe",
        "ELASTICD_EVENT=reload",
        "ELASTICD_PLUGIN_KIND=action",
    ] {
        assert!(env.lines().any(|l| l == expected), "{expected}:\n{env}");
    }

    let mut messages = Vec::new();
    let mut backends = 3;
    for mode in ["huge", "hang", "segv", "exit3"] {
        write(d, "reloader.mode", mode);
        backends += 1;
        write(
            d,
            "backends.json",
            &format!(r#"[{{"targets": ["127.0.0.{backends}:80"]}}]"#),
        );
        let run = render(d);
        assert_eq!(run.code, 1, "{mode}: {}", run.stderr);
        let shown = errors(&run, d);
        assert!(
            shown.contains("action plugin `reloader` (DIR/plugins/actions/reloader)"),
            "{mode}: {shown}"
        );
        assert_eq!(read(d, "reloader.done").lines().count(), 2, "{mode}");
        // The files are in place; the reload is owed.
        assert!(read(d, "backend.cfg").contains(&format!("127.0.0.{backends}:80")));
        let state = json(d, "state.json");
        assert_eq!(
            state["pending_reloads"],
            serde_json::json!(["fe"]),
            "{mode}"
        );
        if mode == "hang" {
            assert_gone(&d.join("child.pid"));
        }
        messages.push(format!("--- {mode}\n{shown}"));
    }
    insta::assert_snapshot!(messages.join("\n"));

    // Nothing changed since, but the owed reload is delivered by the next run.
    write(d, "reloader.mode", "good");
    let run = render(d);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(read(d, "reloader.done").lines().count(), 3);
    assert_eq!(
        json(d, "state.json")["pending_reloads"],
        serde_json::json!([])
    );
    assert_eq!(
        json(d, "reloader.request.json")["outputs"],
        serde_json::json!([])
    );
}

const HOOK_CONFIG: &str = r#"environment: prod
state_file: state.json
services:
  web:
    locators: [file: { path: backends.json }]
    on_change:
      - exec: [notify, --channel, ops]
        timeout: 1s
        options: { room: ops }
frontends:
  fe:
    reload: { command: [sh, -c, "test ! -e reload-fails && echo reload >> reloads"] }
outputs:
  - { template: "builtin:haproxy", path: backend.cfg, frontend: fe, vars: { service: web } }
"#;

fn endpoints(list: &serde_json::Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|b| format!("{}:{}", b["address"].as_str().unwrap(), b["port"]))
        .collect()
}

#[test]
fn on_change_gets_added_and_removed_and_is_retried_until_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    plugin(d, "plugins/actions/notify", &modal_action("notify"));
    write(d, "config.yaml", HOOK_CONFIG);
    write(d, "notify.mode", "good");
    write(
        d,
        "backends.json",
        r#"[{"targets": ["127.0.0.1:80", "127.0.0.2:80"]}]"#,
    );
    let run = render(d);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(read(d, "notify.done").lines().count(), 1);
    let request = json(d, "notify.request.json");
    let canonical = fs::canonicalize(d).unwrap();
    assert_eq!(request["protocol"], 1);
    assert_eq!(request["kind"], "action");
    assert_eq!(request["event"], "change");
    assert_eq!(request["service"], "web");
    assert_eq!(request["environment"], "prod");
    assert_eq!(request["options"], serde_json::json!({"room": "ops"}));
    assert_eq!(
        endpoints(&request["changes"][0]["added"]),
        ["127.0.0.1:80", "127.0.0.2:80"]
    );
    assert_eq!(request["changes"][0]["removed"], serde_json::json!([]));
    assert_eq!(
        request["outputs"],
        serde_json::json!([{"path": canonical.join("backend.cfg"), "frontend": "fe"}])
    );
    let env = read(d, "notify.env.txt");
    for expected in [
        "ELASTICD_SERVICE=web",
        "ELASTICD_EVENT=change",
        "ELASTICD_PLUGIN_KIND=action",
        "ELASTICD_ENVIRONMENT=prod",
    ] {
        assert!(env.lines().any(|l| l == expected), "{expected}:\n{env}");
    }

    // Nothing changed: the hook does not run again.
    let run = render(d);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(read(d, "notify.done").lines().count(), 1);

    // A change whose frontend reload fails is not applied: the hook waits.
    write(d, "reload-fails", "");
    fs::remove_file(d.join("notify.request.json")).unwrap();
    write(
        d,
        "backends.json",
        r#"[{"targets": ["127.0.0.2:80", "127.0.0.3:80"]}]"#,
    );
    let run = render(d);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(read(d, "backend.cfg").contains("127.0.0.3:80"));
    assert!(
        !d.join("notify.request.json").exists(),
        "the hook ran early"
    );
    fs::remove_file(d.join("reload-fails")).unwrap();

    // Every way a hook can fail: the change stays applied, the hook stays owed.
    let mut messages = Vec::new();
    for mode in ["huge", "hang", "segv", "exit3"] {
        write(d, "notify.mode", mode);
        let run = render(d);
        assert_eq!(run.code, 1, "{mode}: {}", run.stderr);
        let shown = errors(&run, d);
        assert!(
            shown.contains("action plugin `notify` (DIR/plugins/actions/notify)"),
            "{mode}: {shown}"
        );
        assert!(read(d, "backend.cfg").contains("127.0.0.3:80"), "{mode}");
        assert_eq!(read(d, "notify.done").lines().count(), 1, "{mode}");
        let acked = &json(d, "state.json")["hooks_acknowledged"]["web#0 notify --channel ops"];
        assert_eq!(endpoints(acked), ["127.0.0.1:80", "127.0.0.2:80"], "{mode}");
        if mode == "hang" {
            assert_gone(&d.join("child.pid"));
        }
        messages.push(format!("--- {mode}\n{shown}"));
    }
    insta::assert_snapshot!(messages.join("\n"));

    // Another change arrives meanwhile; the retry is summarized against what the hook last
    // acknowledged, so the removal of 127.0.0.1 is not lost.
    write(d, "notify.mode", "good");
    write(
        d,
        "backends.json",
        r#"[{"targets": ["127.0.0.2:80", "127.0.0.3:80", "127.0.0.4:80"]}]"#,
    );
    let dry = elasticd_env(d, &["render", "--config", "config.yaml", "--dry-run"], &[]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert_eq!(
        read(d, "notify.done").lines().count(),
        1,
        "dry runs run no hooks"
    );
    let run = render(d);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(read(d, "notify.done").lines().count(), 2);
    let request = json(d, "notify.request.json");
    assert_eq!(
        endpoints(&request["changes"][0]["added"]),
        ["127.0.0.3:80", "127.0.0.4:80"]
    );
    assert_eq!(
        endpoints(&request["changes"][0]["removed"]),
        ["127.0.0.1:80"]
    );
    assert_eq!(
        request["changes"][0]["backends"].as_array().unwrap().len(),
        3
    );
}
