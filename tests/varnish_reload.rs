//! The `varnish` reload action against a real varnishd on loopback: VCL swaps move traffic to
//! the new backends, a VCL that fails to compile leaves the active one serving, old VCLs are
//! discarded beyond `keep`, and a wrong secret is a readable error.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

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

/// One GET through the frontend; the body, or what went wrong.
fn get(port: u16) -> Result<String, String> {
    let mut stream =
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end in {response:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or_default().to_string());
    }
    Ok(body.to_string())
}

/// The set of backend names that `n` requests reached.
fn reached(port: u16, n: usize) -> Vec<String> {
    let mut seen: Vec<String> = (0..n)
        .map(|_| get(port).unwrap_or_else(|e| format!("error: {e}")))
        .collect();
    seen.sort();
    seen.dedup();
    seen
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A varnishd started for one test, killed with its whole process group on drop.
struct Varnishd {
    child: Child,
    port: u16,
    admin: String,
    workdir: PathBuf,
}

impl Varnishd {
    fn start(dir: &Path) -> Varnishd {
        let port = free_port();
        let admin = format!("127.0.0.1:{}", free_port());
        let workdir = dir.join("varnish");
        let child = Command::new(program("varnishd"))
            .args(["-F", "-n"])
            .arg(&workdir)
            .args(["-a", &format!("127.0.0.1:{port}"), "-T", &admin, "-S"])
            .arg(dir.join("secret"))
            .arg("-f")
            .arg(dir.join("main.vcl"))
            // Small pools: several varnishds may run at once under nextest.
            .args([
                "-s",
                "malloc,16m",
                "-p",
                "thread_pools=1",
                "-p",
                "thread_pool_min=5",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start varnishd (Debian package varnish)");
        let varnish = Varnishd {
            child,
            port,
            admin,
            workdir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "varnishd did not listen on {port}"
            );
            thread::sleep(Duration::from_millis(50));
        }
        varnish
    }

    /// `varnishadm -n <workdir> <args>`: stdout, panicking on failure.
    fn adm(&self, args: &[&str]) -> String {
        let out = Command::new(program("varnishadm"))
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

impl Drop for Varnishd {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY-free: kill(2) on the group this test started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .status();
        let _ = self.child.wait();
    }
}

fn program(name: &str) -> String {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path.to_string_lossy().into_owned();
        }
    }
    name.to_string()
}

/// A 0755 temp dir: varnishd, started as root, compiles VCL as user `vcache`.
fn work_dir() -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("elasticd-varnish-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
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
fn setup(dir: &Path, targets: &[String], reload: &str) {
    write(dir, "main.vcl", MAIN_VCL);
    write(dir, "secret", "not-so-secret\n");
    write_targets(dir, targets);
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
        varnishd = program("varnishd"),
        dir = dir.display(),
    );
    write(dir, "config.yaml", &config);
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

fn write_targets(dir: &Path, targets: &[String]) {
    let quoted: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    write(
        dir,
        "backends.json",
        &format!("[{{\"targets\": [{}]}}]", quoted.join(", ")),
    );
}

/// `elasticd render`: (exit code, stderr).
fn render(dir: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_elasticd"))
        .args(["render", "--config", "config.yaml"])
        .current_dir(dir)
        .env_remove("ELASTICD_CONFIG")
        .env("NO_COLOR", "1")
        .env(
            "PATH",
            format!(
                "{}:/usr/sbin:/sbin",
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn varnish_reload(dir: &Path, extra: &str) -> String {
    format!(
        "      varnish: {{ vcl: main.vcl, instance: {}/varnish{extra} }}",
        dir.display()
    )
}

#[test]
fn swaps_move_traffic_and_old_vcls_are_discarded_beyond_keep() {
    let dir = work_dir();
    let a = IdentityBackend::start("127.0.0.21", "a");
    let b = IdentityBackend::start("127.0.0.22", "b");
    let c = IdentityBackend::start("127.0.0.23", "c");
    setup(
        dir.path(),
        &[a.target()],
        &varnish_reload(dir.path(), ", keep: 1"),
    );
    // The first render writes backends.vcl; varnishd is not running yet, so the reload fails
    // and is reported, and the file is in place for varnishd to start with.
    let (code, stderr) = render(dir.path());
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("vcl.load"), "{stderr}");
    let varnish = Varnishd::start(dir.path());
    assert_eq!(reached(varnish.port, 6), vec!["a"]);
    assert_eq!(varnish.active(), "boot");

    // Add two, drop one: one swap.
    write_targets(dir.path(), &[b.target(), c.target()]);
    let (code, stderr) = render(dir.path());
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
        write_targets(dir.path(), &targets);
        let (code, stderr) = render(dir.path());
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
    assert!(!vcls.iter().any(|(_, name)| *name == first), "{vcls:?}");
}

#[test]
fn a_vcl_that_fails_to_compile_leaves_the_active_one_serving() {
    let dir = work_dir();
    let a = IdentityBackend::start("127.0.0.24", "a");
    let b = IdentityBackend::start("127.0.0.25", "b");
    setup(dir.path(), &[a.target()], &varnish_reload(dir.path(), ""));
    render(dir.path());
    let varnish = Varnishd::start(dir.path());
    assert_eq!(reached(varnish.port, 4), vec!["a"]);

    // The main VCL goes bad behind elasticd's back and there is no check to catch it: the
    // compile error must come from vcl.load and nothing must change in the running Varnish.
    let config = std::fs::read_to_string(dir.path().join("config.yaml")).unwrap();
    let without_check: String = config
        .lines()
        .filter(|l| !l.trim_start().starts_with("check:"))
        .map(|l| format!("{l}\n"))
        .collect();
    write(dir.path(), "config.yaml", &without_check);
    write(
        dir.path(),
        "main.vcl",
        &MAIN_VCL.replace("return (pass);", "return (nonsense);"),
    );
    write_targets(dir.path(), &[b.target()]);
    let (code, stderr) = render(dir.path());
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
    write(dir.path(), "main.vcl", MAIN_VCL);
    let (code, stderr) = render(dir.path());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(reached(varnish.port, 4), vec!["b"]);
}

#[test]
fn admin_address_and_secret_work_and_a_wrong_secret_is_reported() {
    let dir = work_dir();
    let a = IdentityBackend::start("127.0.0.26", "a");
    let b = IdentityBackend::start("127.0.0.27", "b");
    setup(dir.path(), &[a.target()], "      command: [\"true\"]");
    render(dir.path());
    let varnish = Varnishd::start(dir.path());
    let reload = format!(
        "      varnish: {{ vcl: main.vcl, admin: \"{}\", secret: wrong-secret, timeout: 5s }}",
        varnish.admin
    );
    setup(dir.path(), &[b.target()], &reload);
    write(dir.path(), "wrong-secret", "nope\n");
    let (code, stderr) = render(dir.path());
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("varnish reload failed"), "{stderr}");
    assert!(
        stderr.contains("wrong-secret"),
        "the error names the secret file: {stderr}"
    );
    assert_eq!(reached(varnish.port, 4), vec!["a"]);

    let reload = reload.replace("wrong-secret", "secret");
    setup(dir.path(), &[b.target()], &reload);
    let (code, stderr) = render(dir.path());
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
        setup(dir.path(), &["127.0.0.1:1".to_string()], reload);
        let (code, stderr) = render(dir.path());
        assert_eq!(code, 2, "{reload}: {stderr}");
        assert!(stderr.contains(expected), "{reload}: {stderr}");
        assert!(stderr.contains("config.yaml:"), "{reload}: {stderr}");
    }
}
