//! The plugin protocol (plugins/README.md, protocol 1) through the binary: the request on stdin,
//! the environment, plugin lookup, and every failure mode of locator, renderer and action
//! plugins: each a clear error naming the plugin, with nothing applied and the last good kept.

mod support;

use std::fs;
use std::path::Path;
use std::time::Duration;

use support::{Output, Test};

/// The `error:` lines of elasticd's stderr (with their continuation lines), temp dir redacted.
fn errors(run: &Output, dir: &Path) -> String {
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

/// One `elasticd render` with a modal plugin in `mode` (written to `mode_file`): it must exit 1
/// with errors naming `plugin`, and after a `hang` the plugin's child must be gone. The errors
/// shown, headed by the mode, for the test's snapshot.
fn failing_render(t: &Test, mode_file: &str, mode: &str, plugin: &str) -> String {
    t.write(mode_file, mode);
    let run = t.render().run();
    assert_eq!(run.code, 1, "{mode}: {}", run.stderr);
    let shown = errors(&run, t.path());
    assert!(shown.contains(plugin), "{mode}: names the plugin: {shown}");
    if mode == "hang" {
        assert_gone(&t.join("child.pid"));
    }
    format!("--- {mode}\n{shown}")
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
    let t = Test::new();
    t.write_executable(
        "plugins/locators/dump",
        "#!/bin/sh\ncat > request.json\nenv > env.txt\necho \"$@\" > args.txt\n\
         echo '[{\"address\": \"127.0.0.2\", \"weight\": 3, \"name\": \"two\", \"tags\": {\"az\": \"a\"}}]'\n",
    );
    t.write(
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
    t.render()
        .env("ELASTICD_TEST_SECRET", "must not leak")
        .env("ELASTICD_TEST_PASS_ME", "passed")
        .run()
        .success();
    assert!(t.read("backend.cfg").contains("127.0.0.2:8080"));
    assert!(t.read("backend.cfg").contains("weight 3"));
    assert_eq!(
        t.json("request.json"),
        serde_json::json!({
            "protocol": 1,
            "kind": "locator",
            "environment": "prod",
            "options": {"namespace": "shop", "replicas": 3, "nested": {"list": [1, 2]}},
            "service": "web",
            "default_port": 8080
        })
    );
    assert_eq!(t.read("args.txt"), "--flag two words\n");
    let env = t.read("env.txt");
    let canonical = fs::canonicalize(t.path()).unwrap();
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
    let t = Test::new();
    let answer = |ip: &str| format!("#!/bin/sh\necho '[{{\"targets\": [\"{ip}:80\"]}}]'\n");
    t.write_executable("custom/where", &answer("127.0.0.2"));
    t.write_executable("custom/locators/where", &answer("127.0.0.3"));
    // The default directory is not searched when `plugin_dir` is set.
    t.write_executable("plugins/locators/where", &answer("127.0.0.4"));
    t.write(
        "config.yaml",
        r#"plugin_dir: custom
services:
  web: { locators: [exec: { command: [where] }] }
outputs:
  - { template: "builtin:haproxy", path: backend.cfg, vars: { service: web } }
"#,
    );
    t.render().run().success();
    assert!(t.read("backend.cfg").contains("127.0.0.3:80"));
    fs::remove_file(t.join("custom/locators/where")).unwrap();
    t.render().run().success();
    assert!(t.read("backend.cfg").contains("127.0.0.2:80"));
    // A path is relative to the config directory and skips the lookup.
    t.write(
        "config.yaml",
        r#"services:
  web: { locators: [exec: { command: [plugins/locators/where] }] }
outputs:
  - { template: "builtin:haproxy", path: backend.cfg, vars: { service: web } }
"#,
    );
    t.render().run().success();
    assert!(t.read("backend.cfg").contains("127.0.0.4:80"));
}

#[test]
fn locator_failures_name_the_plugin_and_keep_the_last_good_file() {
    let t = Test::new().executable("plugins/locators/modal", MODAL_LOCATOR);
    t.write(
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
    t.write("mode", "good");
    t.render().run().success();
    let good = t.read("backend.cfg");
    assert!(good.contains("127.0.0.1:81"), "{good}");
    assert_eq!(t.lines("reloads"), 1);

    let mut messages = Vec::new();
    for mode in ["garbage", "badbackend", "huge", "hang", "segv", "exit3"] {
        messages.push(failing_render(
            &t,
            "mode",
            mode,
            "locator plugin `modal` (DIR/plugins/locators/modal)",
        ));
        assert_eq!(t.read("backend.cfg"), good, "{mode}: last good file kept");
        assert_eq!(t.lines("reloads"), 1, "{mode}: no reload");
    }
    insta::assert_snapshot!(messages.join("\n"));
}

#[test]
fn missing_and_non_executable_plugins_are_config_errors() {
    let t = Test::new().file("plugins/locators/noexec", "#!/bin/sh\necho '[]'\n");
    // Not executable, and shadowing the `true` on PATH: an error, not a fallback.
    t.write("plugins/actions/true", "#!/bin/sh\n");
    t.write("backend.cfg", "previous\n");
    t.write(
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
        let run = t.elasticd([command, "--config", "config.yaml"]).run();
        assert_eq!(run.code, 2, "{command}: {}", run.stderr);
    }
    assert_eq!(t.read("backend.cfg"), "previous\n");
    insta::assert_snapshot!(errors(&t.render().run(), t.path()));
}

#[test]
fn an_exec_fallback_of_haproxy_runtime_is_looked_up_when_the_config_loads() {
    let t = Test::new()
        .file("plugins/actions/noexec", "#!/bin/sh\n")
        .executable(
            "plugins/actions/reloader",
            "#!/bin/sh\necho reload >> reloads\n",
        );
    t.write(
        "config.yaml",
        r#"services:
  web: { port: 80, locators: [static: ["127.0.0.1"]] }
frontends:
  missing:
    reload:
      haproxy_runtime: { socket: admin.sock, fallback: { exec: [no-such-fallback-elasticd] } }
  noexec:
    reload: { haproxy_runtime: { socket: admin.sock, fallback: { exec: [noexec, --now] } } }
  found:
    reload: { haproxy_runtime: { socket: admin.sock, fallback: { exec: [reloader] } } }
outputs: []
"#,
    );
    for command in ["render", "check"] {
        let run = t.elasticd([command, "--config", "config.yaml"]).run();
        assert_eq!(run.code, 2, "{command}: {}", run.stderr);
    }
    assert_eq!(
        errors(&t.render().run(), t.path()),
        "error: config.yaml has 2 problems:\n  \
         config.yaml:6:65: frontend `missing` reload: action plugin `no-such-fallback-elasticd` \
         not found: looked in DIR/plugins/actions/no-such-fallback-elasticd, \
         DIR/plugins/no-such-fallback-elasticd and on PATH\n  \
         config.yaml:8:73: frontend `noexec` reload: action plugin `noexec`: \
         DIR/plugins/actions/noexec is not executable (chmod +x it)"
    );

    // Found in the plugin directory (not on PATH), it is what runs on a first install.
    t.write(
        "config.yaml",
        r#"services:
  web: { port: 80, locators: [static: ["127.0.0.1"]] }
frontends:
  found:
    reload: { haproxy_runtime: { socket: admin.sock, fallback: { exec: [reloader] } } }
outputs:
  - { template: "builtin:haproxy", path: backend.cfg, frontend: found, vars: { service: web } }
"#,
    );
    let run = t.render().run().success();
    assert_eq!(t.lines("reloads"), 1, "{}", run.stderr);
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
    let t = Test::new()
        .executable("plugins/renderers/modal", MODAL_RENDERER)
        .config(RENDERER_CONFIG)
        .file("mode", "good");
    t.write(
        "backends.json",
        r#"[{"targets": ["127.0.0.2", "127.0.0.1:81"], "labels": {"zone": "a"}}]"#,
    );
    fs::create_dir_all(t.join("out")).unwrap();
    t.elasticd(["check", "--config", "config.yaml"])
        .run()
        .success();
    assert!(
        !t.join("render-request.json").exists(),
        "check runs no plugin"
    );
    t.render().run().success();
    assert_eq!(
        t.read("out/envoy.json"),
        "rendered by plugin\nno newline at the end"
    );
    assert_eq!(t.lines("reloads"), 1);
    let request = t.json("render-request.json");
    let out = fs::canonicalize(t.path()).unwrap().join("out/envoy.json");
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
    let env = t.read("render-env.txt");
    for expected in [
        format!("ELASTICD_OUTPUT={}", out.display()),
        "ELASTICD_FRONTEND=fe".into(),
        "ELASTICD_PLUGIN_KIND=renderer".into(),
        "ELASTICD_ENVIRONMENT=staging".into(),
    ] {
        assert!(env.lines().any(|l| l == expected), "{expected}:\n{env}");
    }
    // Dry runs run renderers (to show the diff) but nothing else.
    t.write("backends.json", r#"[{"targets": ["127.0.0.3:80"]}]"#);
    t.render().arg("--dry-run").run().success();
    assert_eq!(
        t.json("render-request.json")["context"]["backends"][0]["address"],
        "127.0.0.3"
    );
    assert_eq!(t.lines("reloads"), 1);
    assert!(!t.read("backend.cfg").contains("127.0.0.3"));
}

#[test]
fn renderer_failures_leave_the_whole_frontend_alone() {
    let t = Test::new()
        .executable("plugins/renderers/modal", MODAL_RENDERER)
        .config(RENDERER_CONFIG)
        .file("mode", "good")
        .file("backends.json", r#"[{"targets": ["127.0.0.1:81"]}]"#);
    fs::create_dir_all(t.join("out")).unwrap();
    t.render().run().success();
    let good_plugin = t.read("out/envoy.json");
    let good_template = t.read("backend.cfg");
    let checks = t.lines("checks");
    assert_eq!(t.lines("reloads"), 1);

    // The backends change, so the template output would change too: it must not be installed
    // while its sibling from the plugin is missing.
    t.write("backends.json", r#"[{"targets": ["127.0.0.2:81"]}]"#);
    let mut messages = Vec::new();
    for mode in ["binary", "huge", "hang", "segv", "exit3"] {
        messages.push(failing_render(
            &t,
            "mode",
            mode,
            "renderer plugin `modal` (DIR/plugins/renderers/modal)",
        ));
        assert_eq!(t.read("out/envoy.json"), good_plugin, "{mode}");
        assert_eq!(t.read("backend.cfg"), good_template, "{mode}");
        assert_eq!(t.lines("checks"), checks, "{mode}: not checked");
        assert_eq!(t.lines("reloads"), 1, "{mode}: not reloaded");
    }
    insta::assert_snapshot!(messages.join("\n"));

    // Once the plugin works again, both files go in together.
    t.write("mode", "good");
    t.render().run().success();
    assert!(t.read("backend.cfg").contains("127.0.0.2:81"));
    assert_eq!(t.lines("reloads"), 2);
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
    let t = Test::new().executable("plugins/actions/reloader", &modal_action("reloader"));
    t.write(
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
    t.write("reloader.mode", "good");
    t.write(
        "backends.json",
        r#"[{"targets": ["127.0.0.1:80", "127.0.0.2:80"]}]"#,
    );
    t.render().run().success();
    assert_eq!(t.lines("reloader.done"), 1);

    t.write(
        "backends.json",
        r#"[{"targets": ["127.0.0.2:80", "127.0.0.3:80"]}]"#,
    );
    t.render().run().success();
    assert_eq!(t.lines("reloader.done"), 2);
    let request = t.json("reloader.request.json");
    let canonical = fs::canonicalize(t.path()).unwrap();
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
    let env = t.read("reloader.env.txt");
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
        backends += 1;
        t.write(
            "backends.json",
            &format!(r#"[{{"targets": ["127.0.0.{backends}:80"]}}]"#),
        );
        messages.push(failing_render(
            &t,
            "reloader.mode",
            mode,
            "action plugin `reloader` (DIR/plugins/actions/reloader)",
        ));
        assert_eq!(t.lines("reloader.done"), 2, "{mode}");
        // The files are in place; the reload is owed.
        assert!(
            t.read("backend.cfg")
                .contains(&format!("127.0.0.{backends}:80"))
        );
        let state = t.json("state.json");
        assert_eq!(
            state["pending_reloads"],
            serde_json::json!(["fe"]),
            "{mode}"
        );
    }
    insta::assert_snapshot!(messages.join("\n"));

    // Nothing changed since, but the owed reload is delivered by the next run.
    t.write("reloader.mode", "good");
    t.render().run().success();
    assert_eq!(t.lines("reloader.done"), 3);
    assert_eq!(
        t.json("state.json")["pending_reloads"],
        serde_json::json!([])
    );
    assert_eq!(
        t.json("reloader.request.json")["outputs"],
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
    let t = Test::new()
        .executable("plugins/actions/notify", &modal_action("notify"))
        .config(HOOK_CONFIG)
        .file("notify.mode", "good");
    t.write(
        "backends.json",
        r#"[{"targets": ["127.0.0.1:80", "127.0.0.2:80"]}]"#,
    );
    t.render().run().success();
    assert_eq!(t.lines("notify.done"), 1);
    let request = t.json("notify.request.json");
    let canonical = fs::canonicalize(t.path()).unwrap();
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
    let env = t.read("notify.env.txt");
    for expected in [
        "ELASTICD_SERVICE=web",
        "ELASTICD_EVENT=change",
        "ELASTICD_PLUGIN_KIND=action",
        "ELASTICD_ENVIRONMENT=prod",
    ] {
        assert!(env.lines().any(|l| l == expected), "{expected}:\n{env}");
    }

    // Nothing changed: the hook does not run again.
    t.render().run().success();
    assert_eq!(t.lines("notify.done"), 1);

    // A change whose frontend reload fails is not applied: the hook waits.
    t.write("reload-fails", "");
    fs::remove_file(t.join("notify.request.json")).unwrap();
    t.write(
        "backends.json",
        r#"[{"targets": ["127.0.0.2:80", "127.0.0.3:80"]}]"#,
    );
    let run = t.render().run();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(t.read("backend.cfg").contains("127.0.0.3:80"));
    assert!(
        !t.join("notify.request.json").exists(),
        "the hook ran early"
    );
    fs::remove_file(t.join("reload-fails")).unwrap();

    // Every way a hook can fail: the change stays applied, the hook stays owed.
    let mut messages = Vec::new();
    for mode in ["huge", "hang", "segv", "exit3"] {
        messages.push(failing_render(
            &t,
            "notify.mode",
            mode,
            "action plugin `notify` (DIR/plugins/actions/notify)",
        ));
        assert!(t.read("backend.cfg").contains("127.0.0.3:80"), "{mode}");
        assert_eq!(t.lines("notify.done"), 1, "{mode}");
        let acked = &t.json("state.json")["hooks_acknowledged"]["web#0 notify --channel ops"];
        assert_eq!(endpoints(acked), ["127.0.0.1:80", "127.0.0.2:80"], "{mode}");
    }
    insta::assert_snapshot!(messages.join("\n"));

    // Another change arrives meanwhile; the retry is summarized against what the hook last
    // acknowledged, so the removal of 127.0.0.1 is not lost.
    t.write("notify.mode", "good");
    t.write(
        "backends.json",
        r#"[{"targets": ["127.0.0.2:80", "127.0.0.3:80", "127.0.0.4:80"]}]"#,
    );
    t.render().arg("--dry-run").run().success();
    assert_eq!(t.lines("notify.done"), 1, "dry runs run no hooks");
    t.render().run().success();
    assert_eq!(t.lines("notify.done"), 2);
    let request = t.json("notify.request.json");
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
