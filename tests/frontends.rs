//! Every built-in template, rendered by the real `elasticd render`, is accepted by the real
//! frontend checker (`nginx -t`, `haproxy -c`, `varnishd -C`, `apache2 -t`).
//!
//! Each test makes a world-readable temp dir, writes a wrapper config from `tests/frontends/`
//! into it (see the README there), writes an elasticd config whose only frontend checks with the
//! real binary, and runs one pass. No checker binds a port or starts a daemon. A missing checker
//! fails the test with the Debian package to install.

mod support;

use std::path::Path;

use support::{Test, program, yaml_str};

/// How one built-in template is checked.
struct Frontend {
    /// The built-in's name, without `builtin:`.
    template: &'static str,
    /// The wrapper config from `tests/frontends/` (placeholders `@DIR@`, `@PORT@`, `@NAME@`).
    wrapper: &'static str,
    /// The wrapper's file name in the temp dir.
    write_as: &'static str,
    /// The rendered snippet's file name in the temp dir (the wrapper includes it).
    snippet: &'static str,
    /// The checker program and the Debian package that ships it.
    program: (&'static str, &'static str),
    /// Other files the wrapper loads, and their Debian packages.
    needs: &'static [(&'static str, &'static str)],
    /// The checker argv: program, temp dir, snippet path (or `{staged}`).
    checker: fn(&str, &str, &str) -> Vec<String>,
    /// A trimmed snippet line starting with this is one backend.
    line_prefix: &'static str,
    /// Extra such lines with zero backends (nginx keeps a `down` placeholder server).
    placeholder_lines: usize,
    /// A var that makes the snippet invalid, and what the checker says about it.
    bad_var: (&'static str, &'static str),
    bad_message: &'static str,
}

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

fn nginx_check(program: &str, dir: &str, _snippet: &str) -> Vec<String> {
    let prefix = format!("{dir}/");
    let conf = format!("{dir}/nginx.conf");
    argv(&[
        program, "-t", "-q", "-e", "stderr", "-p", &prefix, "-c", &conf,
    ])
}

fn haproxy_check(program: &str, dir: &str, snippet: &str) -> Vec<String> {
    let main = format!("{dir}/haproxy.cfg");
    argv(&[program, "-c", "-dW", "-f", &main, "-f", snippet])
}

fn varnish_check(program: &str, dir: &str, _snippet: &str) -> Vec<String> {
    let main = format!("{dir}/main.vcl");
    let workdir = format!("{dir}/varnish");
    argv(&[program, "-C", "-f", &main, "-n", &workdir])
}

fn apache_check(program: &str, dir: &str, _snippet: &str) -> Vec<String> {
    let conf = format!("{dir}/httpd.conf");
    argv(&[program, "-t", "-f", &conf])
}

const NGINX_UNKNOWN: &str = "unknown directive \"bogus_directive\"";
const HAPROXY_BALANCE: &str = "balance only supports";
const APACHE_MODULES: &[(&str, &str)] = &[
    ("/usr/lib/apache2/modules/mod_mpm_event.so", "apache2-bin"),
    (
        "/usr/lib/apache2/modules/mod_proxy_balancer.so",
        "apache2-bin",
    ),
    (
        "/usr/lib/apache2/modules/mod_lbmethod_byrequests.so",
        "apache2-bin",
    ),
];

/// nginx's HTTP `upstream`; `nginx-stream` differs in its wrapper and the module it loads.
const NGINX: Frontend = Frontend {
    template: "nginx",
    wrapper: include_str!("frontends/nginx-http.conf"),
    write_as: "nginx.conf",
    snippet: "upstream.conf",
    program: ("nginx", "nginx"),
    needs: &[],
    checker: nginx_check,
    line_prefix: "server ",
    placeholder_lines: 1,
    bad_var: ("balance", "bogus_directive"),
    bad_message: NGINX_UNKNOWN,
};

/// HAProxy's HTTP backend; `haproxy-tcp` differs only in its wrapper.
const HAPROXY: Frontend = Frontend {
    template: "haproxy",
    wrapper: include_str!("frontends/haproxy-http.cfg"),
    write_as: "haproxy.cfg",
    snippet: "backend.cfg",
    program: ("haproxy", "haproxy"),
    needs: &[],
    checker: haproxy_check,
    line_prefix: "server ",
    placeholder_lines: 0,
    bad_var: ("balance", "bogus_directive"),
    bad_message: HAPROXY_BALANCE,
};

const FRONTENDS: &[Frontend] = &[
    NGINX,
    Frontend {
        template: "nginx-stream",
        wrapper: include_str!("frontends/nginx-stream.conf"),
        needs: &[(
            "/usr/lib/nginx/modules/ngx_stream_module.so",
            "libnginx-mod-stream",
        )],
        ..NGINX
    },
    HAPROXY,
    Frontend {
        template: "haproxy-tcp",
        wrapper: include_str!("frontends/haproxy-tcp.cfg"),
        ..HAPROXY
    },
    Frontend {
        template: "varnish",
        wrapper: include_str!("frontends/main.vcl"),
        write_as: "main.vcl",
        snippet: "backends.vcl",
        program: ("varnishd", "varnish"),
        needs: &[],
        checker: varnish_check,
        line_prefix: ".host = ",
        placeholder_lines: 0,
        bad_var: ("policy", "bogus_directive"),
        bad_message: "Symbol not found: 'directors.bogus_directive'",
    },
    Frontend {
        template: "apache",
        wrapper: include_str!("frontends/httpd.conf"),
        write_as: "httpd.conf",
        snippet: "balancer.conf",
        program: ("apache2", "apache2-bin (or apache2)"),
        needs: APACHE_MODULES,
        checker: apache_check,
        line_prefix: "BalancerMember ",
        placeholder_lines: 0,
        bad_var: ("lbmethod", "bogus_directive"),
        bad_message: "unknown lbmethod lbmethod=bogus_directive",
    },
];

fn frontend(template: &str) -> &'static Frontend {
    FRONTENDS
        .iter()
        .find(|f| f.template == template)
        .unwrap_or_else(|| panic!("no frontend `{template}` in the table"))
}

/// The checker's absolute path; fails the test (naming the package) when it is not installed.
fn checker_program(fe: &Frontend) -> String {
    let (name, package) = fe.program;
    let found = program(name, package);
    for (file, package) in fe.needs {
        assert!(
            Path::new(file).exists(),
            "{file} (loaded by the builtin:{} wrapper) is missing: install the Debian package {package}",
            fe.template
        );
    }
    found
}

/// A temp dir that the checkers can read as another user (varnishd compiles as `vcache`).
fn work_dir() -> Test {
    Test::world_readable("elasticd-frontends-")
}

/// What one `elasticd render` did.
struct Rendered {
    code: i32,
    stderr: String,
    /// The snippet on disk afterwards.
    snippet: Option<String>,
}

/// Writes the wrapper and an elasticd config into `dir` and runs `elasticd render` once.
///
/// `backends` are YAML flow nodes for the static locator; `vars` are YAML values. With `staged`
/// the checker gets `{staged}` instead of the snippet path (only the HAProxy checkers read the
/// snippet from their argv).
fn render_with_checker(
    t: &Test,
    fe: &Frontend,
    backends: &[String],
    vars: &[(&str, &str)],
    staged: bool,
) -> Rendered {
    let program = checker_program(fe);
    let dir_text = t.path_str();
    let wrapper = fe
        .wrapper
        .replace("@DIR@", dir_text)
        .replace("@PORT@", "18099")
        .replace("@NAME@", "web");
    t.write(fe.write_as, &wrapper);

    let snippet_path = t.join(fe.snippet);
    let snippet_arg = if staged {
        "{staged}".to_string()
    } else {
        snippet_path.to_string_lossy().into_owned()
    };
    let check = (fe.checker)(&program, dir_text, &snippet_arg)
        .iter()
        .map(|a| yaml_str(a))
        .collect::<Vec<_>>()
        .join(", ");
    let vars = vars
        .iter()
        .map(|(k, v)| format!(", {k}: {v}"))
        .collect::<String>();
    let config = format!(
        "services:
  web:
    port: 8080
    locators:
      - static: [{backends}]
    guard: {{ min_backends: 0 }}
frontends:
  f:
    check: [{check}]
outputs:
  - {{ template: \"builtin:{template}\", path: {snippet}, frontend: f, vars: {{ service: web{vars} }} }}
",
        backends = backends.join(", "),
        template = fe.template,
        snippet = fe.snippet,
    );
    t.write("config.yaml", &config);

    let out = t
        .elasticd(["--log", "warn", "render", "--config"])
        .arg(t.join("config.yaml"))
        .run();
    let leftovers: Vec<_> = std::fs::read_dir(t.path())
        .expect("list temp dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".elasticd-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "staged files left behind: {leftovers:?}"
    );
    Rendered {
        code: out.code,
        stderr: out.stderr,
        snippet: std::fs::read_to_string(&snippet_path).ok(),
    }
}

impl Rendered {
    /// Asserts success and returns the installed snippet.
    fn installed(self, fe: &Frontend) -> String {
        assert_eq!(
            self.code, 0,
            "builtin:{}: render failed; stderr:\n{}",
            fe.template, self.stderr
        );
        self.snippet
            .unwrap_or_else(|| panic!("builtin:{}: {} was not installed", fe.template, fe.snippet))
    }

    /// Asserts a failed check whose output reached stderr.
    fn check_failed(&self, fe: &Frontend) {
        assert_eq!(
            self.code, 1,
            "builtin:{}: a bad snippet must fail the pass; stderr:\n{}",
            fe.template, self.stderr
        );
        assert!(
            self.stderr.contains("check failed") && self.stderr.contains(fe.bad_message),
            "builtin:{}: stderr lacks the checker's message `{}`:\n{}",
            fe.template,
            fe.bad_message,
            self.stderr
        );
    }
}

fn backend_lines(fe: &Frontend, snippet: &str) -> usize {
    snippet
        .lines()
        .filter(|l| l.trim_start().starts_with(fe.line_prefix))
        .count()
}

fn one_backend() -> Vec<String> {
    vec![yaml_str("127.0.0.1")]
}

/// IPv4, IPv6 and a host name, weights 1..3, ports given both ways.
fn five_backends() -> Vec<String> {
    vec![
        yaml_str("127.0.0.1"),
        yaml_str("127.0.0.2:8081"),
        "{ address: 127.0.0.3, port: 8082, weight: 3 }".to_string(),
        "{ address: \"::1\", port: 8083, weight: 2 }".to_string(),
        "{ address: localhost, port: 8084, weight: 1 }".to_string(),
    ]
}

fn accepts(template: &str, backends: &[String], addresses: &[&str]) {
    let fe = frontend(template);
    let dir = work_dir();
    let snippet = render_with_checker(&dir, fe, backends, &[], false).installed(fe);
    let expected = if backends.is_empty() {
        fe.placeholder_lines
    } else {
        backends.len()
    };
    assert_eq!(
        backend_lines(fe, &snippet),
        expected,
        "builtin:{}: expected {expected} `{}` lines in:\n{snippet}",
        fe.template,
        fe.line_prefix.trim()
    );
    for address in addresses {
        assert!(
            snippet.contains(address),
            "builtin:{}: {address} missing from:\n{snippet}",
            fe.template
        );
    }
}

fn accepts_zero_backends(template: &str) {
    accepts(template, &[], &[]);
}

fn accepts_one_backend(template: &str) {
    accepts(template, &one_backend(), &["127.0.0.1"]);
}

fn accepts_five_backends(template: &str) {
    accepts(
        template,
        &five_backends(),
        &["127.0.0.1", "127.0.0.2", "127.0.0.3", "::1", "localhost"],
    );
}

/// A var that breaks the snippet: nothing is installed on a fresh dir, and an installed good
/// snippet is restored.
fn rejects_bad_snippet(template: &str) {
    let fe = frontend(template);
    let (key, value) = fe.bad_var;
    let bad = [(key, value)];

    let dir = work_dir();
    let first = render_with_checker(&dir, fe, &one_backend(), &bad, false);
    first.check_failed(fe);
    assert!(
        first.snippet.is_none(),
        "builtin:{}: a rejected snippet was left installed:\n{}",
        fe.template,
        first.snippet.unwrap_or_default()
    );

    let good = render_with_checker(&dir, fe, &one_backend(), &[], false).installed(fe);
    let second = render_with_checker(&dir, fe, &five_backends(), &bad, false);
    second.check_failed(fe);
    assert_eq!(
        second.snippet.as_deref(),
        Some(good.as_str()),
        "builtin:{}: the previous snippet was not restored",
        fe.template
    );
}

/// Hostile metadata: newlines, both quotes, `;`, braces, `#`, backslashes and spaces.
fn backends_with_metadata(name: &str, zone: &str, id: &str, tag: (&str, &str)) -> Vec<String> {
    let meta = format!(
        "name: {}, zone: {}, id: {}, tags: {{ {}: {} }}",
        yaml_str(name),
        yaml_str(zone),
        yaml_str(id),
        yaml_str(tag.0),
        yaml_str(tag.1)
    );
    vec![
        format!("{{ address: 127.0.0.1, port: 8080, weight: 2, {meta} }}"),
        format!("{{ address: \"::1\", port: 8081, {meta} }}"),
        yaml_str("127.0.0.5:8082"),
    ]
}

fn hostile_metadata_is_inert(template: &str) {
    let fe = frontend(template);
    let plain = backends_with_metadata("web-a", "zone-a", "i-0123", ("role", "web"));
    let hostile = backends_with_metadata(
        "x\";\n}\nserver evil 6.6.6.6:1;#",
        "z' }\r\n</Proxy>\nbackend evil { .host = \"6.6.6.6\"; }\\",
        "i-1 \\\"evil\n\t# {};\n",
        ("role\"\n}", "v';\n{ server evil 6.6.6.6:1; }#\\"),
    );

    let plain_dir = work_dir();
    let plain_out = render_with_checker(&plain_dir, fe, &plain, &[], false).installed(fe);
    let hostile_dir = work_dir();
    let hostile_out = render_with_checker(&hostile_dir, fe, &hostile, &[], false).installed(fe);

    for needle in ["6.6.6.6:1;", "\"evil"] {
        assert!(
            !hostile_out.contains(needle),
            "builtin:{}: `{needle}` reached the output:\n{hostile_out}",
            fe.template
        );
    }
    assert_eq!(
        hostile_out.lines().count(),
        plain_out.lines().count(),
        "builtin:{}: hostile metadata changed the line count:\n{hostile_out}\n--- plain:\n{plain_out}",
        fe.template
    );
    assert_eq!(backend_lines(fe, &hostile_out), 3, "{hostile_out}");
}

macro_rules! frontend_tests {
    ($($module:ident => $template:literal),* $(,)?) => {$(
        mod $module {
            #[test]
            fn accepts_zero_backends() {
                super::accepts_zero_backends($template);
            }

            #[test]
            fn accepts_one_backend() {
                super::accepts_one_backend($template);
            }

            #[test]
            fn accepts_five_backends() {
                super::accepts_five_backends($template);
            }

            #[test]
            fn rejected_snippet_is_not_installed() {
                super::rejects_bad_snippet($template);
            }

            #[test]
            fn hostile_metadata_is_inert() {
                super::hostile_metadata_is_inert($template);
            }
        }
    )*};
}

frontend_tests! {
    nginx => "nginx",
    nginx_stream => "nginx-stream",
    haproxy => "haproxy",
    haproxy_tcp => "haproxy-tcp",
    varnish => "varnish",
    apache => "apache",
}

/// A checker given `{staged}` validates the staged file before anything is installed.
#[test]
fn haproxy_checks_the_staged_file() {
    let fe = frontend("haproxy");
    let dir = work_dir();
    let bad = render_with_checker(&dir, fe, &one_backend(), &[fe.bad_var], true);
    bad.check_failed(fe);
    assert!(
        bad.snippet.is_none(),
        "a rejected staged snippet was installed"
    );
    let good = render_with_checker(&dir, fe, &five_backends(), &[], true).installed(fe);
    assert_eq!(backend_lines(fe, &good), 5, "{good}");
}
