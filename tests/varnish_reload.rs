//! The `varnish` reload action against a real varnishd on loopback: VCL swaps move traffic to
//! the new backends, a VCL that fails to compile leaves the active one serving, old VCLs are
//! discarded beyond `keep`, and a wrong secret is a readable error.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use support::{Group, Output, Test, free_port, http_get, program, targets_json, wait_until};

/// An HTTP server on one loopback address that answers every request with its own name.
struct IdentityBackend {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl IdentityBackend {
    fn start(ip: &str, name: &str) -> IdentityBackend {
        let listener = TcpListener::bind((ip, 0)).expect("bind backend on loopback");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let body = name.to_string();
        thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let body = body.clone();
                        thread::spawn(move || serve(stream, &body));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        IdentityBackend { addr, stop }
    }

    fn target(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for IdentityBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Answers HTTP/1.1 requests on one connection until the peer closes it.
fn serve(mut stream: TcpStream, body: &str) {
    stream.set_nonblocking(false).ok();
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            buf.drain(..end + 4);
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if stream.write_all(response.as_bytes()).is_err() {
                return;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The set of backend names that `n` requests reached.
fn reached(port: u16, n: usize) -> Vec<String> {
    let mut seen: Vec<String> = (0..n)
        .map(|_| http_get(port).unwrap_or_else(|e| format!("error: {e}")))
        .collect();
    seen.sort();
    seen.dedup();
    seen
}

/// A varnishd started for one test, killed with its whole process group on drop.
struct Varnishd {
    _group: Group,
    port: u16,
    admin: String,
    workdir: PathBuf,
}

impl Varnishd {
    fn start(t: &Test) -> Varnishd {
        let port = free_port();
        let admin = format!("127.0.0.1:{}", free_port());
        let workdir = t.join("varnish");
        let mut cmd = Command::new(program("varnishd", "varnish"));
        cmd.args(["-F", "-n"])
            .arg(&workdir)
            .args(["-a", &format!("127.0.0.1:{port}"), "-T", &admin, "-S"])
            .arg(t.join("secret"))
            .arg("-f")
            .arg(t.join("main.vcl"))
            // Small pools: several varnishds may run at once under nextest.
            .args([
                "-s",
                "malloc,16m",
                "-p",
                "thread_pools=1",
                "-p",
                "thread_pool_min=5",
            ]);
        let group = Group::spawn("varnishd", cmd, &t.join("varnishd.log"));
        wait_until(
            &format!("varnishd to listen on {port}"),
            Duration::from_secs(20),
            || group.log(),
            || TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        Varnishd {
            _group: group,
            port,
            admin,
            workdir,
        }
    }

    /// `varnishadm -n <workdir> <args>`: stdout, panicking on failure.
    fn adm(&self, args: &[&str]) -> String {
        let out = Command::new(program("varnishadm", "varnish"))
            .arg("-n")
            .arg(&self.workdir)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "varnishadm {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// (status, name) of every loaded VCL.
    fn vcls(&self) -> Vec<(String, String)> {
        self.adm(&["vcl.list"])
            .lines()
            .filter_map(|line| {
                let cols: Vec<&str> = line.split_whitespace().collect();
                Some((cols.first()?.to_string(), cols.get(4)?.to_string()))
            })
            .collect()
    }

    fn active(&self) -> String {
        self.vcls()
            .into_iter()
            .find(|(status, _)| status == "active")
            .map(|(_, name)| name)
            .unwrap_or_default()
    }
}

/// A 0755 temp dir: varnishd, started as root, compiles VCL as user `vcache`.
fn work_dir() -> Test {
    Test::world_readable("elasticd-varnish-")
}

const MAIN_VCL: &str = r#"vcl 4.1;
include "./backends.vcl";
sub vcl_recv {
    set req.backend_hint = web.backend();
    # Every request goes to a backend, so that the test sees where it went.
    return (pass);
}
"#;

/// Writes main.vcl, the secret, the locator file and the elasticd config; renders once.
fn setup(t: &Test, targets: &[String], reload: &str) {
    t.write("main.vcl", MAIN_VCL);
    t.write("secret", "not-so-secret\n");
    t.write("backends.json", &targets_json(targets));
    let config = format!(
        r#"state_file: state.json
services:
  web:
    locators:
      - file: {{ path: backends.json }}
    guard: {{ min_backends: 1 }}
outputs:
  - template: "builtin:varnish"
    path: backends.vcl
    frontend: varnish
    vars: {{ service: web }}
frontends:
  varnish:
    check: [{varnishd}, -C, -n, {dir}/check, -f, {dir}/main.vcl]
    reload:
{reload}
"#,
        varnishd = program("varnishd", "varnish"),
        dir = t.path().display(),
    );
    t.write("config.yaml", &config);
}

/// `elasticd render`, with the sbin dirs on PATH (varnishadm).
fn render(t: &Test) -> Output {
    let path = format!(
        "{}:/usr/sbin:/sbin",
        std::env::var("PATH").unwrap_or_default()
    );
    t.render().env("PATH", path).run()
}

fn varnish_reload(t: &Test, extra: &str) -> String {
    format!(
        "      varnish: {{ vcl: main.vcl, instance: {}/varnish{extra} }}",
        t.path().display()
    )
}

#[test]
fn swaps_move_traffic_and_old_vcls_are_discarded_beyond_keep() {
    let dir = work_dir();
    let a = IdentityBackend::start("127.0.0.21", "a");
    let b = IdentityBackend::start("127.0.0.22", "b");
    let c = IdentityBackend::start("127.0.0.23", "c");
    setup(&dir, &[a.target()], &varnish_reload(&dir, ", keep: 1"));
    // The first render writes backends.vcl; varnishd is not running yet, so the reload fails
    // and is reported, and the file is in place for varnishd to start with.
    let Output { code, stderr, .. } = render(&dir);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("vcl.load"), "{stderr}");
    let varnish = Varnishd::start(&dir);
    assert_eq!(reached(varnish.port, 6), vec!["a"]);
    assert_eq!(varnish.active(), "boot");

    // Add two, drop one: one swap.
    dir.write("backends.json", &targets_json(&[b.target(), c.target()]));
    let Output { code, stderr, .. } = render(&dir);
    assert_eq!(code, 0, "{stderr}");
    let first = varnish.active();
    assert!(first.starts_with("elasticd_"), "{:?}", varnish.vcls());
    assert_eq!(reached(varnish.port, 12), vec!["b", "c"]);

    // More swaps: only `keep` (1) earlier elasticd VCL stays loaded; `boot` isn't ours.
    for targets in [
        vec![a.target()],
        vec![c.target()],
        vec![a.target(), b.target()],
    ] {
        dir.write("backends.json", &targets_json(&targets));
        let Output { code, stderr, .. } = render(&dir);
        assert_eq!(code, 0, "{stderr}");
    }
    assert_eq!(reached(varnish.port, 12), vec!["a", "b"]);
    let vcls = varnish.vcls();
    // A discarded VCL still in use by an in-flight request lingers as `discarded`.
    let ours: Vec<&(String, String)> = vcls
        .iter()
        .filter(|(status, name)| name.starts_with("elasticd_") && status != "discarded")
        .collect();
    assert_eq!(ours.len(), 2, "active + keep=1: {vcls:?}");
    assert!(vcls.iter().any(|(_, name)| name == "boot"), "{vcls:?}");
    // The first swap's VCL is gone, or on its way out once its last request finishes.
    assert!(
        !vcls
            .iter()
            .any(|(status, name)| *name == first && status != "discarded"),
        "{vcls:?}"
    );
}

#[test]
fn a_vcl_that_fails_to_compile_leaves_the_active_one_serving() {
    let dir = work_dir();
    let a = IdentityBackend::start("127.0.0.24", "a");
    let b = IdentityBackend::start("127.0.0.25", "b");
    setup(&dir, &[a.target()], &varnish_reload(&dir, ""));
    render(&dir);
    let varnish = Varnishd::start(&dir);
    assert_eq!(reached(varnish.port, 4), vec!["a"]);

    // The main VCL goes bad behind elasticd's back and there is no check to catch it: the
    // compile error must come from vcl.load and nothing must change in the running Varnish.
    let config = dir.read("config.yaml");
    let without_check: String = config
        .lines()
        .filter(|l| !l.trim_start().starts_with("check:"))
        .map(|l| format!("{l}\n"))
        .collect();
    dir.write("config.yaml", &without_check);
    dir.write(
        "main.vcl",
        &MAIN_VCL.replace("return (pass);", "return (nonsense);"),
    );
    dir.write("backends.json", &targets_json(&[b.target()]));
    let Output { code, stderr, .. } = render(&dir);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("vcl.load") && stderr.contains("the active VCL is unchanged"),
        "{stderr}"
    );
    // Varnish's own compiler message reaches the operator.
    assert!(stderr.contains("nonsense"), "{stderr}");
    assert_eq!(varnish.active(), "boot");
    assert_eq!(reached(varnish.port, 4), vec!["a"]);

    // Fixed: the owed reload goes through on the next run without any backend change.
    dir.write("main.vcl", MAIN_VCL);
    let Output { code, stderr, .. } = render(&dir);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(reached(varnish.port, 4), vec!["b"]);
}

#[test]
fn admin_address_and_secret_work_and_a_wrong_secret_is_reported() {
    let dir = work_dir();
    let a = IdentityBackend::start("127.0.0.26", "a");
    let b = IdentityBackend::start("127.0.0.27", "b");
    setup(&dir, &[a.target()], "      command: [\"true\"]");
    render(&dir);
    let varnish = Varnishd::start(&dir);
    let reload = format!(
        "      varnish: {{ vcl: main.vcl, admin: \"{}\", secret: wrong-secret, timeout: 5s }}",
        varnish.admin
    );
    setup(&dir, &[b.target()], &reload);
    dir.write("wrong-secret", "nope\n");
    let Output { code, stderr, .. } = render(&dir);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("varnish reload failed"), "{stderr}");
    assert!(
        stderr.contains("wrong-secret"),
        "the error names the secret file: {stderr}"
    );
    assert_eq!(reached(varnish.port, 4), vec!["a"]);

    let reload = reload.replace("wrong-secret", "secret");
    setup(&dir, &[b.target()], &reload);
    let Output { code, stderr, .. } = render(&dir);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(reached(varnish.port, 4), vec!["b"]);
}

#[test]
fn bad_varnish_sections_are_config_errors() {
    let dir = work_dir();
    for (reload, expected) in [
        (
            "      varnish: { vcl: main.vcl, secret: secret }",
            "`secret` goes with `admin`",
        ),
        ("      varnish: { instance: x }", "missing field `vcl`"),
        ("      varnish: { vcl: main.vcl, bogus: 1 }", "bogus"),
        (
            "      varnish: { vcl: main.vcl }\n      command: [x]",
            "give one of",
        ),
    ] {
        setup(&dir, &["127.0.0.1:1".to_string()], reload);
        let Output { code, stderr, .. } = render(&dir);
        assert_eq!(code, 2, "{reload}: {stderr}");
        assert!(stderr.contains(expected), "{reload}: {stderr}");
        assert!(stderr.contains("config.yaml:"), "{reload}: {stderr}");
    }
}
