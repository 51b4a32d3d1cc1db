//! Real frontends under live traffic, for `tests/live.rs`: HTTP backends on their own 127.0.0.x
//! addresses that answer with their identity, nginx / HAProxy / Varnish / Apache started as plain
//! processes in a temp dir on loopback ports, `elasticd run` with a `file` locator the test
//! rewrites, and a load client that counts what every request got.
//!
//! Every process started here runs in its own process group ([`Group`]), and the whole group is
//! killed with SIGKILL when its guard is dropped, so a failing test leaves nothing running.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{Group, Test, free_port, program, wait_until, yaml_list, yaml_str};

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

// ---------------------------------------------------------------------------------------------
// Backends

/// One HTTP backend: answers every request with `200` and its identity as the body.
pub struct Backend {
    /// What it answers, like `b3`.
    pub id: String,
    /// Where it listens.
    pub addr: SocketAddr,
    server: Option<Arc<tiny_http::Server>>,
    threads: Vec<JoinHandle<()>>,
}

impl Backend {
    /// Starts a backend on `ip` (any free port) with `threads` request handlers.
    pub fn start(id: &str, ip: Ipv4Addr, threads: usize) -> Backend {
        let server = Arc::new(
            tiny_http::Server::http(SocketAddr::from((ip, 0)))
                .unwrap_or_else(|e| panic!("backend {id} on {ip}: {e}")),
        );
        let addr = server
            .server_addr()
            .to_ip()
            .expect("backend listens on TCP");
        let threads = (0..threads)
            .map(|_| {
                let server = Arc::clone(&server);
                let id = id.to_string();
                std::thread::spawn(move || {
                    for request in server.incoming_requests() {
                        // No caching anywhere: the identity is the point of every answer.
                        let header = tiny_http::Header::from_bytes("Cache-Control", "no-store")
                            .expect("static header");
                        let _ = request.respond(
                            tiny_http::Response::from_string(id.clone()).with_header(header),
                        );
                    }
                })
            })
            .collect();
        Backend {
            id: id.to_string(),
            addr,
            server: Some(server),
            threads,
        }
    }

    /// `ip:port` as the locator file names it.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }
}

impl Backend {
    /// Stops serving and closes the listening socket.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            for _ in &self.threads {
                server.unblock();
            }
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Backends `b0..bN` on 127.0.0.10, 127.0.0.11, ...
pub struct Pool {
    /// The backends, by index.
    pub backends: Vec<Backend>,
}

impl Pool {
    /// Starts `n` backends, each on its own address.
    pub fn start(n: usize) -> Pool {
        let backends = (0..n)
            .map(|i| Backend::start(&format!("b{i}"), Ipv4Addr::new(127, 0, 0, 10 + i as u8), 4))
            .collect();
        Pool { backends }
    }

    /// Stops backend `index`; its address stays in the documents, with nobody listening.
    pub fn stop(&mut self, index: usize) {
        self.backends[index].stop();
    }

    /// The identities of the backends at `indexes`.
    pub fn ids(&self, indexes: &[usize]) -> BTreeSet<String> {
        indexes
            .iter()
            .map(|&i| self.backends[i].id.clone())
            .collect()
    }

    /// A file_sd document listing the backends at `indexes`.
    pub fn document(&self, indexes: &[usize]) -> String {
        self.document_in_zone(indexes, None)
    }

    /// The same document with a `zone` on every backend (the templates print it in comments).
    pub fn document_in_zone(&self, indexes: &[usize], zone: Option<&str>) -> String {
        let targets: Vec<String> = indexes
            .iter()
            .map(|&i| format!("\"{}\"", self.backends[i].target()))
            .collect();
        let zone = zone
            .map(|z| format!(", \"zone\": \"{z}\""))
            .unwrap_or_default();
        format!("[{{\"targets\": [{}]{zone}}}]\n", targets.join(", "))
    }
}

/// How a [`Switchable`] backend behaves; switched while it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Answers `200` with its identity, on keep-alive connections.
    None = 0,
    /// Stopped: the listener is closed (connections are refused) and open connections close.
    Stopped = 1,
    /// Accepts connections and reads requests, but never answers them.
    Hang = 2,
    /// Answers `500`.
    Status500 = 3,
    /// Accepts connections and closes them at once, without reading.
    Close = 4,
}

impl Fault {
    fn from_u8(n: u8) -> Fault {
        match n {
            1 => Fault::Stopped,
            2 => Fault::Hang,
            3 => Fault::Status500,
            4 => Fault::Close,
            _ => Fault::None,
        }
    }
}

struct SwitchShared {
    fault: AtomicU8,
    quit: AtomicBool,
}

/// An HTTP backend like [`Backend`] (its identity as the body) whose failure mode the test
/// switches with [`Switchable::set`]: stopped, hanging, answering 500, closing connections, and
/// back to serving on the same address. One thread per connection.
pub struct Switchable {
    /// What it answers, like `s1`.
    pub id: String,
    /// Where it listens (the same address after a stop).
    pub addr: SocketAddr,
    shared: Arc<SwitchShared>,
    accept: Option<JoinHandle<()>>,
}

impl Switchable {
    /// Starts a backend serving on `ip` (any free port).
    pub fn start(id: &str, ip: Ipv4Addr) -> Switchable {
        let listener = std::net::TcpListener::bind(SocketAddr::from((ip, 0)))
            .unwrap_or_else(|e| panic!("backend {id} on {ip}: {e}"));
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(SwitchShared {
            fault: AtomicU8::new(Fault::None as u8),
            quit: AtomicBool::new(false),
        });
        let accept = {
            let shared = Arc::clone(&shared);
            let id = id.to_string();
            std::thread::spawn(move || switch_accept(Some(listener), addr, &id, &shared))
        };
        Switchable {
            id: id.to_string(),
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// Switches how it behaves from now on.
    pub fn set(&self, fault: Fault) {
        self.shared.fault.store(fault as u8, Ordering::SeqCst);
    }

    /// `ip:port` as the locator file names it.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Switchable {
    fn drop(&mut self) {
        self.shared.quit.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// A file_sd document listing `backends`.
pub fn switchable_document(backends: &[&Switchable], zone: Option<&str>) -> String {
    let targets: Vec<String> = backends
        .iter()
        .map(|b| format!("\"{}\"", b.target()))
        .collect();
    let zone = zone
        .map(|z| format!(", \"zone\": \"{z}\""))
        .unwrap_or_default();
    format!("[{{\"targets\": [{}]{zone}}}]\n", targets.join(", "))
}

fn switch_accept(
    mut listener: Option<std::net::TcpListener>,
    addr: SocketAddr,
    id: &str,
    shared: &Arc<SwitchShared>,
) {
    while !shared.quit.load(Ordering::SeqCst) {
        let fault = Fault::from_u8(shared.fault.load(Ordering::SeqCst));
        if fault == Fault::Stopped {
            // Closing the listener makes new connections be refused, as for a dead process.
            listener = None;
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        let l = match &listener {
            Some(l) => l,
            // Back on the same address (std sets SO_REUSEADDR, so TIME_WAIT does not block it).
            None => match std::net::TcpListener::bind(addr) {
                Ok(l) => listener.insert(l),
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            },
        };
        // Non-blocking, polled: a switch to `Stopped` must close the listener promptly.
        l.set_nonblocking(true).expect("non-blocking listener");
        let stream = match l.accept() {
            Ok((stream, _)) => stream,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        if fault == Fault::Close {
            drop(stream);
            continue;
        }
        let shared = Arc::clone(shared);
        let id = id.to_string();
        std::thread::spawn(move || switch_connection(stream, &id, &shared));
    }
}

/// Serves one connection until the peer closes it, a fault says to drop it, or the backend
/// quits.
fn switch_connection(mut stream: TcpStream, id: &str, shared: &SwitchShared) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    // Short reads, so that a switch to `Stopped` closes idle connections within 50 ms.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf: Vec<u8> = Vec::with_capacity(2048);
    let mut chunk = [0u8; 2048];
    loop {
        let fault = || Fault::from_u8(shared.fault.load(Ordering::SeqCst));
        let end = loop {
            if shared.quit.load(Ordering::SeqCst)
                || matches!(fault(), Fault::Stopped | Fault::Close)
            {
                return;
            }
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            match stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        };
        // Requests here (nginx's, the probes') have no body.
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        buf.drain(..end);
        let close = head.contains("connection: close");
        let (status, body) = match fault() {
            Fault::None => ("200 OK", id.to_string()),
            Fault::Status500 => ("500 Internal Server Error", format!("{id} failing")),
            Fault::Hang => {
                // Never answers; the connection closes when the backend is switched away from
                // hanging (or the peer gives up first).
                while fault() == Fault::Hang && !shared.quit.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
            Fault::Stopped | Fault::Close => return,
        };
        let answer = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        if stream.write_all(answer.as_bytes()).is_err() || close {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Frontends

/// Which frontend, and how elasticd reloads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// nginx, `signal: HUP` to the master from its pidfile.
    Nginx,
    /// HAProxy master-worker, `signal: USR2` to the master from its pidfile (file + reload).
    Haproxy,
    /// HAProxy master-worker with `haproxy_runtime`: 8 slots changed through the stats socket,
    /// `reload` on the master socket as the fallback.
    HaproxyRuntime,
    /// varnishd, reloaded by a `command` running varnishadm (`vcl.load` + `vcl.use`).
    Varnish,
    /// varnishd, reloaded by elasticd's `varnish` action over the admin port.
    VarnishAction,
    /// Apache httpd, `signal: USR1` (graceful restart) to the parent from its pidfile.
    Apache,
}

impl Kind {
    /// The built-in template.
    pub fn template(self) -> &'static str {
        match self {
            Kind::Nginx => "builtin:nginx",
            Kind::Haproxy | Kind::HaproxyRuntime => "builtin:haproxy",
            Kind::Varnish | Kind::VarnishAction => "builtin:varnish",
            Kind::Apache => "builtin:apache",
        }
    }

    fn wrapper(self) -> (&'static str, &'static str) {
        match self {
            Kind::Nginx => ("nginx.conf", include_str!("../live-configs/nginx.conf")),
            Kind::Haproxy => ("haproxy.cfg", include_str!("../live-configs/haproxy.cfg")),
            Kind::HaproxyRuntime => (
                "haproxy.cfg",
                include_str!("../live-configs/haproxy-runtime.cfg"),
            ),
            Kind::Varnish | Kind::VarnishAction => {
                ("main.vcl", include_str!("../live-configs/main.vcl"))
            }
            Kind::Apache => ("httpd.conf", include_str!("../live-configs/httpd.conf")),
        }
    }

    /// The rendered file the wrapper includes.
    pub fn snippet(self) -> &'static str {
        match self {
            Kind::Nginx => "upstream.conf",
            Kind::Haproxy | Kind::HaproxyRuntime => "backend.cfg",
            Kind::Varnish | Kind::VarnishAction => "backends.vcl",
            Kind::Apache => "balancer.conf",
        }
    }

    /// A template var that makes the checker reject the output, and the checker's message.
    pub fn broken_var(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Kind::Nginx => ("balance", "bogus_directive", "unknown directive"),
            Kind::Haproxy | Kind::HaproxyRuntime => {
                ("balance", "bogus_directive", "balance only supports")
            }
            Kind::Varnish | Kind::VarnishAction => {
                ("policy", "bogus_directive", "Symbol not found")
            }
            Kind::Apache => ("lbmethod", "bogus_directive", "unknown lbmethod"),
        }
    }
}

/// A frontend's work dir, ports and processes; everything is killed when dropped.
pub struct Frontend {
    /// Which frontend.
    pub kind: Kind,
    /// Its work dir (prefix, server root, varnish -n parent); world-readable.
    pub dir: Test,
    /// The loopback port it serves on.
    pub port: u16,
    /// Varnish only: the CLI port for varnishadm.
    pub admin_port: u16,
    /// Extra template vars for the output (YAML flow values).
    pub vars: Vec<(String, String)>,
    /// The `reload:` map of the elasticd frontend, as YAML flow text.
    pub reload: String,
    process: Option<Group>,
    daemon: Option<Group>,
}

impl Frontend {
    /// Prepares a work dir with the wrapper config and the default reload for `kind`.
    pub fn new(kind: Kind) -> Frontend {
        // varnishd (as root) compiles and serves as `vcache`, nginx and httpd children run as
        // `nobody`: the dir and everything in it must be readable by others.
        let dir = Test::world_readable("elasticd-live-");
        let mut fe = Frontend {
            kind,
            dir,
            port: free_port(),
            admin_port: if matches!(kind, Kind::Varnish | Kind::VarnishAction) {
                free_port()
            } else {
                0
            },
            vars: Vec::new(),
            reload: String::new(),
            process: None,
            daemon: None,
        };
        fe.reload = fe.default_reload();
        if kind == Kind::HaproxyRuntime {
            fe.vars.push(("slots".into(), "8".into()));
        }
        let (name, text) = kind.wrapper();
        let user = if running_as_root() {
            "User nobody\nGroup nogroup"
        } else {
            ""
        };
        let text = text
            .replace("@DIR@", &fe.dir_str())
            .replace("@PORT@", &fe.port.to_string())
            .replace("@USER@", user);
        fe.write(name, &text);
        if matches!(kind, Kind::Varnish | Kind::VarnishAction) {
            fe.write("secret", "elasticd-live-test-secret\n");
            std::fs::set_permissions(fe.path("secret"), std::fs::Permissions::from_mode(0o600))
                .expect("chmod secret");
        }
        fe
    }

    /// The work dir as a string.
    pub fn dir_str(&self) -> String {
        self.dir.path_str().to_string()
    }

    /// A path in the work dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes a file in the work dir through a rename, world-readable.
    pub fn write(&self, name: &str, text: &str) {
        self.dir.write(name, text);
    }

    /// A file in the work dir, or "" when it does not exist.
    pub fn read(&self, name: &str) -> String {
        self.dir.read(name)
    }

    /// The varnishadm argv prefix for this instance.
    pub fn varnishadm(&self) -> Vec<String> {
        vec![
            program("varnishadm", "varnish"),
            "-T".into(),
            format!("127.0.0.1:{}", self.admin_port),
            "-S".into(),
            self.path("secret").to_string_lossy().into_owned(),
        ]
    }

    fn default_reload(&self) -> String {
        let dir = self.dir_str();
        match self.kind {
            Kind::Nginx => format!(
                "{{ signal: HUP, pidfile: {} }}",
                yaml_str(&format!("{dir}/nginx.pid"))
            ),
            Kind::Haproxy => format!(
                "{{ signal: USR2, pidfile: {} }}",
                yaml_str(&format!("{dir}/haproxy.pid"))
            ),
            Kind::Apache => format!(
                "{{ signal: USR1, pidfile: {} }}",
                yaml_str(&format!("{dir}/httpd.pid"))
            ),
            Kind::HaproxyRuntime => format!(
                "{{ haproxy_runtime: {{ socket: {}, fallback: {{ master_socket: {} }} }} }}",
                yaml_str(&format!("{dir}/admin.sock")),
                yaml_str(&format!("{dir}/master.sock"))
            ),
            Kind::VarnishAction => format!(
                "{{ varnish: {{ vcl: {}, admin: \"127.0.0.1:{}\", secret: {} }} }}",
                yaml_str(&format!("{dir}/main.vcl")),
                self.admin_port,
                yaml_str(&format!("{dir}/secret"))
            ),
            Kind::Varnish => {
                // Each load gets a fresh name; the VCL that was active before is discarded so
                // that 50 passes do not pile up 50 compiled VCLs.
                let adm = self.varnishadm().join(" ");
                let script = format!(
                    "set -e; old=$({adm} vcl.list | awk '$1 == \"active\" {{ print $NF }}'); \
                     new=elasticd_$(date +%s%N); {adm} vcl.load $new {dir}/main.vcl >/dev/null; \
                     {adm} vcl.use $new >/dev/null; \
                     if [ -n \"$old\" ]; then {adm} vcl.discard $old >/dev/null || true; fi"
                );
                format!(
                    "{{ command: [sh, -c, {}], timeout: 60s }}",
                    yaml_str(&script)
                )
            }
        }
    }

    fn check(&self) -> Vec<String> {
        let dir = self.dir_str();
        match self.kind {
            Kind::Nginx => vec![
                program("nginx", "nginx"),
                "-t".into(),
                "-q".into(),
                "-e".into(),
                "stderr".into(),
                "-p".into(),
                format!("{dir}/"),
                "-c".into(),
                format!("{dir}/nginx.conf"),
            ],
            Kind::Haproxy | Kind::HaproxyRuntime => vec![
                program("haproxy", "haproxy"),
                "-c".into(),
                "-f".into(),
                format!("{dir}/haproxy.cfg"),
                "-f".into(),
                "{staged}".into(),
            ],
            Kind::Varnish | Kind::VarnishAction => vec![
                program("varnishd", "varnish"),
                "-C".into(),
                "-f".into(),
                format!("{dir}/main.vcl"),
                "-n".into(),
                format!("{dir}/varnish-check"),
            ],
            Kind::Apache => vec![
                program("apache2", "apache2-bin"),
                "-t".into(),
                "-f".into(),
                format!("{dir}/httpd.conf"),
            ],
        }
    }

    /// Writes the elasticd config (refresh 1s, settle 100ms..1s) with `extra_vars` on the output.
    pub fn write_config(&self, extra_vars: &[(&str, &str)]) {
        let mut vars = String::from("service: web");
        for (k, v) in self
            .vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(extra_vars.iter().copied())
        {
            vars.push_str(&format!(", {k}: {v}"));
        }
        let config = format!(
            "daemon: {{ settle_min: 100ms, settle_max: 1s, jitter: 0, backoff_max: 2s }}
services:
  web:
    refresh: 1s
    locators: [file: {{ path: backends.json }}]
frontends:
  fe:
    check: {check}
    check_timeout: 60s
    reload: {reload}
outputs:
  - {{ template: \"{template}\", path: {snippet}, frontend: fe, vars: {{ {vars} }} }}
",
            check = yaml_list(&self.check()),
            reload = self.reload,
            template = self.kind.template(),
            snippet = self.kind.snippet(),
        );
        self.write("config.yaml", &config);
    }

    /// Renders the first snippet with `elasticd render --no-reload` (the frontend needs the
    /// file to start), then starts the frontend and waits until it serves.
    pub fn start(&mut self, document: &str) {
        self.write("backends.json", document);
        self.write_config(&[]);
        let out = self
            .dir
            .elasticd(["--log", "warn", "render", "--no-reload", "--config"])
            .arg(self.path("config.yaml"))
            .run();
        assert!(out.code == 0, "first render failed:\n{}", out.stderr);
        self.launch();
    }

    /// Starts the frontend process on the files in the work dir and waits until it serves.
    pub fn launch(&mut self) {
        let dir = self.dir_str();
        let log = self.path("frontend.log");
        let cmd = match self.kind {
            Kind::Nginx => {
                let mut c = Command::new(program("nginx", "nginx"));
                c.args([
                    "-e",
                    "stderr",
                    "-p",
                    &format!("{dir}/"),
                    "-c",
                    &format!("{dir}/nginx.conf"),
                ])
                .args(["-g", "daemon off;"]);
                c
            }
            Kind::Haproxy | Kind::HaproxyRuntime => {
                let mut c = Command::new(program("haproxy", "haproxy"));
                c.args([
                    "-W",
                    "-S",
                    &format!("{dir}/master.sock"),
                    "-p",
                    &format!("{dir}/haproxy.pid"),
                ])
                .args([
                    "-f",
                    &format!("{dir}/haproxy.cfg"),
                    "-f",
                    &format!("{dir}/backend.cfg"),
                ]);
                c
            }
            Kind::Varnish | Kind::VarnishAction => {
                let mut c = Command::new(program("varnishd", "varnish"));
                c.args(["-F", "-n", &format!("{dir}/varnish")])
                    .args(["-a", &format!("127.0.0.1:{}", self.port)])
                    .args(["-T", &format!("127.0.0.1:{}", self.admin_port)])
                    .args([
                        "-S",
                        &format!("{dir}/secret"),
                        "-f",
                        &format!("{dir}/main.vcl"),
                    ])
                    .args([
                        "-s",
                        "malloc,32m",
                        "-p",
                        "thread_pools=1",
                        "-p",
                        "thread_pool_min=10",
                    ]);
                c
            }
            Kind::Apache => {
                let mut c = Command::new(program("apache2", "apache2-bin"));
                c.args(["-f", &format!("{dir}/httpd.conf"), "-DFOREGROUND"]);
                c
            }
        };
        self.process = Some(Group::spawn(&format!("{:?}", self.kind), cmd, &log));
        let pidfile = match self.kind {
            Kind::Nginx => Some("nginx.pid"),
            Kind::Haproxy | Kind::HaproxyRuntime => Some("haproxy.pid"),
            Kind::Apache => Some("httpd.pid"),
            Kind::Varnish | Kind::VarnishAction => None,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let pid_ok = pidfile.is_none_or(|p| !self.read(p).trim().is_empty());
            if pid_ok && get(self.port).is_ok_and(|(status, _)| status == 200) {
                break;
            }
            let log_text = self.logs();
            self.process
                .as_mut()
                .expect("started")
                .assert_running(&log_text);
            assert!(
                Instant::now() < deadline,
                "{:?} did not serve within 30s:\n{log_text}",
                self.kind
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts `elasticd run` on the config in the work dir and waits for its first apply, so
    /// that the next change is a pass of its own. The locator file must differ from what the
    /// running frontend was started with (see `setup` in tests/live.rs), or there is no apply.
    pub fn start_daemon(&mut self) {
        let daemon = self
            .dir
            .elasticd(["run", "--config", "config.yaml", "--log", "debug"])
            .daemon();
        self.daemon = Some(daemon);
        let d = &*self;
        wait_until(
            "elasticd to start",
            Duration::from_secs(20),
            || d.logs(),
            || d.read("daemon.log").contains("applied web"),
        );
    }

    /// Replaces the locator's answer and asks the daemon to look now (SIGUSR1).
    pub fn set_backends(&self, document: &str) {
        self.write("backends.json", document);
        self.signal_daemon(Signal::SIGUSR1);
    }

    /// Sends `signal` to `elasticd run`.
    pub fn signal_daemon(&self, signal: Signal) {
        self.daemon.as_ref().expect("daemon started").signal(signal);
    }

    /// Stops `elasticd run` with SIGTERM and returns its exit code.
    pub fn stop_daemon(&mut self) -> Option<i32> {
        self.daemon.take().expect("daemon started").stop()
    }

    /// The daemon's log.
    pub fn daemon_log(&self) -> String {
        self.read("daemon.log")
    }

    /// The tails of the daemon, frontend and error logs, for failure messages.
    pub fn logs(&self) -> String {
        let tail = |name: &str| {
            let text = self.read(name);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!(
            "--- daemon.log:\n{}\n--- frontend.log:\n{}\n--- error.log:\n{}\n--- {}:\n{}",
            tail("daemon.log"),
            tail("frontend.log"),
            tail("error.log"),
            self.kind.snippet(),
            self.read(self.kind.snippet())
        )
    }

    /// Kills the frontend (its whole process group) at once.
    pub fn kill_frontend(&mut self) {
        self.process.take();
    }

    /// Panics when the frontend or the daemon has exited.
    pub fn assert_running(&mut self) {
        let logs = self.logs();
        if let Some(p) = self.process.as_mut() {
            p.assert_running(&logs);
        }
        if let Some(d) = self.daemon.as_mut() {
            d.assert_running(&logs);
        }
    }
}

impl Drop for Frontend {
    fn drop(&mut self) {
        // The daemon first, so that it does not reload a frontend that is going away.
        self.daemon.take();
        self.process.take();
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP client

/// How long a load client waits for the next bytes of an answer, unless told otherwise.
const DEFAULT_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTP/1.1 connection with keep-alive.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Requests answered on it so far.
    used: u64,
}

/// Why a request did not get an answer.
#[derive(Debug)]
enum Failure {
    /// Closed or reset before the first byte of the answer.
    NoAnswer(String),
    /// Broken during the answer.
    Broken(String),
    /// No byte of the answer within the client's timeout: the request hung (not retried,
    /// unlike a keep-alive connection the server closed).
    TimedOut,
}

impl Conn {
    fn open(port: u16) -> std::io::Result<Conn> {
        Conn::open_with(port, DEFAULT_ANSWER_TIMEOUT)
    }

    /// Like [`Conn::open`], giving up on a read after `timeout` without a byte.
    fn open_with(port: u16, timeout: Duration) -> std::io::Result<Conn> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(1024),
            used: 0,
        })
    }

    /// Sends `GET /` and reads the answer: status, body, and whether the server keeps the
    /// connection open.
    fn get(&mut self) -> Result<(u16, String, bool), Failure> {
        self.stream
            .write_all(b"GET / HTTP/1.1\r\nHost: live.test\r\nUser-Agent: elasticd-live\r\n\r\n")
            .map_err(|e| Failure::NoAnswer(format!("write: {e}")))?;
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        let (status, head_len, length, chunked, close) = loop {
            let n = match self.stream.read(&mut chunk) {
                Ok(0) if self.buf.is_empty() => return Err(Failure::NoAnswer("closed".into())),
                Ok(0) => return Err(Failure::Broken("closed in the header".into())),
                Ok(n) => n,
                Err(e)
                    if self.buf.is_empty()
                        && matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                {
                    return Err(Failure::TimedOut);
                }
                Err(e) if self.buf.is_empty() => {
                    return Err(Failure::NoAnswer(format!("read: {e}")));
                }
                Err(e) => return Err(Failure::Broken(format!("read: {e}"))),
            };
            self.buf.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let mut length = None;
                    let mut chunked = false;
                    let mut close = false;
                    for h in response.headers.iter() {
                        let value = String::from_utf8_lossy(h.value).to_ascii_lowercase();
                        if h.name.eq_ignore_ascii_case("content-length") {
                            length = value.trim().parse::<usize>().ok();
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked = value.contains("chunked");
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            close = value.contains("close");
                        }
                    }
                    break (response.code.unwrap_or(0), len, length, chunked, close);
                }
                Ok(httparse::Status::Partial) => continue,
                Err(e) => return Err(Failure::Broken(format!("bad answer: {e}"))),
            }
        };
        let mut body = self.buf.split_off(head_len);
        if chunked {
            let mut decoded = Vec::new();
            loop {
                // Needs a whole chunk-size line, then the chunk and its CRLF.
                if let Some(pos) = body.windows(2).position(|w| w == b"\r\n") {
                    let size_text = String::from_utf8_lossy(&body[..pos]).to_string();
                    let size =
                        usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                            .map_err(|_| {
                                Failure::Broken(format!("bad chunk size `{size_text}`"))
                            })?;
                    if size == 0 {
                        if body[pos + 2..].windows(2).any(|w| w == b"\r\n") {
                            break;
                        }
                    } else if body.len() >= pos + 2 + size + 2 {
                        decoded.extend_from_slice(&body[pos + 2..pos + 2 + size]);
                        body.drain(..pos + 2 + size + 2);
                        continue;
                    }
                }
                if self.read_body(&mut body, &mut chunk)? == 0 {
                    return Err(Failure::Broken("closed in the body".into()));
                }
            }
            body = decoded;
        } else if let Some(length) = length {
            while body.len() < length {
                if self.read_body(&mut body, &mut chunk)? == 0 {
                    return Err(Failure::Broken("closed in the body".into()));
                }
            }
            body.truncate(length);
        } else {
            // No length: the body runs to the end of the connection.
            while self.read_body(&mut body, &mut chunk)? != 0 {}
            return Ok((status, String::from_utf8_lossy(&body).into_owned(), false));
        }
        self.used += 1;
        Ok((status, String::from_utf8_lossy(&body).into_owned(), !close))
    }
}

impl Conn {
    /// Reads what comes next of a body onto `body`; how much (0 at the end of the connection).
    fn read_body(&mut self, body: &mut Vec<u8>, chunk: &mut [u8]) -> Result<usize, Failure> {
        let n = self
            .stream
            .read(chunk)
            .map_err(|e| Failure::Broken(format!("read body: {e}")))?;
        body.extend_from_slice(&chunk[..n]);
        Ok(n)
    }
}

/// One `GET /` on a fresh connection: status and body.
pub fn get(port: u16) -> Result<(u16, String), String> {
    let mut conn = Conn::open(port).map_err(|e| format!("connect: {e}"))?;
    conn.get()
        .map(|(s, b, _)| (s, b))
        .map_err(|e| format!("{e:?}"))
}

/// What one request got.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// `200` from the backend with this identity.
    Served(String),
    /// Any other status (with its body's first line).
    Status(u16, String),
    /// No connection, or the connection broke (a fresh one, or during the answer).
    Error(String),
}

/// One finished request.
#[derive(Clone, Debug)]
pub struct Event {
    /// When the request was sent (its first attempt).
    pub started: Instant,
    /// When the answer (or the failure) arrived.
    pub at: Instant,
    /// What it was.
    pub outcome: Outcome,
}

/// Threads that send `GET /` to a frontend in a loop over keep-alive connections and record
/// every answer.
///
/// A request sent on a connection that had already served requests, and that was closed before
/// any byte of the answer came back, is sent once more on a new connection, as HTTP clients do
/// for idempotent requests (RFC 9110 section 9.2.2): a server may close an idle keep-alive
/// connection at any time, and a graceful reload does exactly that. Those retries are counted
/// in `stale_retries`; a failure on a fresh connection, or a retry that fails too, is an error.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Every finished request, in arrival order.
    pub events: Arc<Mutex<Vec<Event>>>,
    /// Requests re-sent after the server closed an idle keep-alive connection.
    pub stale_retries: Arc<AtomicU64>,
    /// When the load started.
    pub started: Instant,
}

impl Load {
    /// Starts `threads` clients against `127.0.0.1:port`, each pausing `pause` between
    /// requests.
    pub fn start(port: u16, threads: usize, pause: Duration) -> Load {
        Load::start_with_timeout(port, threads, pause, DEFAULT_ANSWER_TIMEOUT)
    }

    /// Like [`Load::start`], with a request failing when no byte of its answer comes for
    /// `timeout` (a user who gives up on a hanging page), so that a backend that hangs holds
    /// each client only that long.
    pub fn start_with_timeout(
        port: u16,
        threads: usize,
        pause: Duration,
        timeout: Duration,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let events = Arc::new(Mutex::new(Vec::with_capacity(100_000)));
        let stale_retries = Arc::new(AtomicU64::new(0));
        let threads = (0..threads)
            .map(|_| {
                let stop = Arc::clone(&stop);
                let events = Arc::clone(&events);
                let stale = Arc::clone(&stale_retries);
                std::thread::spawn(move || {
                    client_loop(port, pause, timeout, &stop, &events, &stale)
                })
            })
            .collect();
        Load {
            stop,
            threads,
            events,
            stale_retries,
            started: Instant::now(),
        }
    }

    /// Events that arrived at or after `since`.
    pub fn since(&self, since: Instant) -> Vec<Event> {
        let events = self.events.lock().expect("events lock");
        let start = events.partition_point(|e| e.at < since);
        events[start..].to_vec()
    }

    /// The first answer at or after `since` served by one of `ids`.
    pub fn first_from(&self, ids: &BTreeSet<String>, since: Instant) -> Option<Instant> {
        self.since(since).iter().find_map(|e| match &e.outcome {
            Outcome::Served(id) if ids.contains(id) => Some(e.at),
            _ => None,
        })
    }

    /// Waits until the answers of the last `window` reach exactly `ids`: every one of them,
    /// and nothing else. Panics with the counts after `timeout`.
    pub fn wait_exact(
        &self,
        ids: &BTreeSet<String>,
        window: Duration,
        timeout: Duration,
        context: impl Fn() -> String,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let now = Instant::now();
            let seen = self.served(now - window);
            let total: u64 = seen.values().sum();
            let set: BTreeSet<String> = seen.keys().cloned().collect();
            if total >= 10 && &set == ids {
                return;
            }
            if now > deadline {
                panic!(
                    "requests did not reach exactly {ids:?} within {timeout:?}; last {window:?}: {seen:?}\n{}",
                    context()
                );
            }
        }
    }

    /// Answers per backend identity since `since`.
    pub fn served(&self, since: Instant) -> BTreeMap<String, u64> {
        let mut seen = BTreeMap::new();
        for e in self.since(since) {
            if let Outcome::Served(id) = e.outcome {
                *seen.entry(id).or_insert(0) += 1;
            }
        }
        seen
    }

    /// Failed requests (errors and non-200 answers) since `since`.
    pub fn failures(&self, since: Instant) -> Vec<Event> {
        self.since(since)
            .into_iter()
            .filter(|e| !matches!(e.outcome, Outcome::Served(_)))
            .collect()
    }

    /// Failed requests (errors and non-200 answers) sent at or after `since`, whenever they
    /// ended: a request that hangs fails long after it went out.
    pub fn failures_sent(&self, since: Instant) -> Vec<Event> {
        let events = self.events.lock().expect("events lock");
        let mut failed: Vec<Event> = events
            .iter()
            .filter(|e| e.started >= since && !matches!(e.outcome, Outcome::Served(_)))
            .cloned()
            .collect();
        failed.sort_by_key(|e| e.started);
        failed
    }

    /// Stops the clients and returns the totals.
    pub fn stop(mut self) -> Totals {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let elapsed = self.started.elapsed();
        let events = self.events.lock().expect("events lock");
        let mut totals = Totals {
            requests: events.len() as u64,
            elapsed,
            stale_retries: self.stale_retries.load(Ordering::Relaxed),
            ..Totals::default()
        };
        for e in events.iter() {
            match &e.outcome {
                Outcome::Served(_) => {}
                Outcome::Status(code, _) if *code >= 500 => totals.status_5xx += 1,
                Outcome::Status(..) => totals.status_other += 1,
                Outcome::Error(_) => totals.errors += 1,
            }
            if !matches!(e.outcome, Outcome::Served(_)) && totals.examples.len() < 10 {
                totals.examples.push(format!("{:?}", e.outcome));
            }
        }
        totals
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What a load run saw in total.
#[derive(Debug, Default)]
pub struct Totals {
    /// Finished requests.
    pub requests: u64,
    /// How long the load ran.
    pub elapsed: Duration,
    /// Connection errors (refused, reset, closed mid-answer, timeouts).
    pub errors: u64,
    /// 5xx answers.
    pub status_5xx: u64,
    /// Other non-200 answers.
    pub status_other: u64,
    /// Requests re-sent after an idle keep-alive connection was closed by the server.
    pub stale_retries: u64,
    /// Up to 10 failures, for messages.
    pub examples: Vec<String>,
}

impl Totals {
    /// Errors plus non-200 answers.
    pub fn failed(&self) -> u64 {
        self.errors + self.status_5xx + self.status_other
    }

    /// Requests per second.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

fn client_loop(
    port: u16,
    pause: Duration,
    timeout: Duration,
    stop: &AtomicBool,
    events: &Mutex<Vec<Event>>,
    stale: &AtomicU64,
) {
    let mut conn: Option<Conn> = None;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let outcome = request(port, timeout, &mut conn, stale);
        let event = Event {
            started,
            at: Instant::now(),
            outcome,
        };
        let failed = !matches!(event.outcome, Outcome::Served(_));
        events.lock().expect("events lock").push(event);
        if failed {
            // Do not spin on a frontend that refuses connections.
            std::thread::sleep(Duration::from_millis(10));
        } else if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
}

fn request(port: u16, timeout: Duration, conn: &mut Option<Conn>, stale: &AtomicU64) -> Outcome {
    for attempt in 0..2 {
        if conn.is_none() {
            match Conn::open_with(port, timeout) {
                Ok(c) => *conn = Some(c),
                Err(e) => return Outcome::Error(format!("connect: {e}")),
            }
        }
        let c = conn.as_mut().expect("connected");
        let reused = c.used > 0;
        match c.get() {
            Ok((status, body, keep)) => {
                if !keep {
                    *conn = None;
                }
                return if status == 200 {
                    Outcome::Served(body)
                } else {
                    Outcome::Status(status, body.lines().next().unwrap_or("").to_string())
                };
            }
            Err(Failure::NoAnswer(_)) if reused && attempt == 0 => {
                stale.fetch_add(1, Ordering::Relaxed);
                *conn = None;
            }
            Err(e) => {
                *conn = None;
                return Outcome::Error(format!("{e:?}"));
            }
        }
    }
    Outcome::Error("retry on a new connection failed".into())
}

/// Median and maximum of `samples`.
pub fn median_max(samples: &[Duration]) -> (Duration, Duration) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    (sorted[sorted.len() / 2], sorted[sorted.len() - 1])
}
