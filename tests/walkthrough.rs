//! The "first run on Debian" walkthroughs of `docs/frontends.md`, run as written, so that the
//! page cannot drift from what works.
//!
//! Each walkthrough sits between `<!-- walkthrough: NAME -->` and `<!-- /walkthrough -->`. Its
//! fenced blocks are taken in order: a block whose first line is `# /some/path` is a file to
//! write (`(append)` on that line: to add to the end of Debian's), any other block is shell
//! commands, one a line. Everything runs in a prefix: a world-readable temp dir holding a copy of
//! Debian's own files for the frontend (`/etc/nginx`, `/etc/haproxy`, ...) and the directories
//! its package creates, with every `/etc/`, `/run/` and `/var/` path in the page and in those
//! files moved into the prefix, port 80 (Varnish: 6081 and 6082) moved to free loopback ports,
//! and the example backends `10.0.0.11:8080` and `10.0.0.12:8080` replaced by HTTP backends on
//! 127.0.0.10 and 127.0.0.11 that answer with their name.
//!
//! The frontends are the real programs. What the prefix cannot change by a path is done by small
//! wrappers first on `PATH`: `nginx` with `-c` (Debian's compiled-in config path, moved),
//! `varnishd` with `-n` (its work dir), and `systemctl`, which runs the `ExecReload` of Debian's
//! unit. `systemctl restart FRONTEND` and `systemctl enable --now elasticd` lines start the
//! unit's `ExecStart` in the foreground, in a process group of the test (killed on drop),
//! `systemctl reload elasticd` sends it SIGHUP, and a `curl` line is a request that must reach
//! both example backends. Then the test changes the backends file and checks that the daemon the
//! walkthrough started moves the traffic.
//!
//! Each walkthrough also runs with one line left out, to show that the line is needed: without
//! the render before the start, nginx, HAProxy and Varnish refuse to start (Apache starts and
//! answers 503), and without disabling Debian's default site (nginx, Apache) the request gets
//! that site's answer instead of a backend's.
//!
//! It runs as root, as the frontends' Debian units do (they drop to their own users).

mod support;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::live::{Backend, get};
use support::{ELASTICD, Group, Test, free_port, program};

const PAGE: &str = include_str!("../docs/frontends.md");

/// How long a frontend may take to serve, and traffic to move, before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// One fenced block of a walkthrough.
#[derive(Debug)]
enum Block {
    /// A file: its path as the page gives it, whether it is added to the end, the whole block.
    File {
        path: String,
        append: bool,
        text: String,
    },
    /// Shell command lines.
    Commands(Vec<String>),
}

/// The blocks of the walkthrough `name`, in page order.
fn walkthrough(name: &str) -> Vec<Block> {
    let start = format!("<!-- walkthrough: {name} -->");
    let from = PAGE
        .find(&start)
        .unwrap_or_else(|| panic!("docs/frontends.md has no `{start}`"));
    let rest = &PAGE[from + start.len()..];
    let to = rest
        .find("<!-- /walkthrough -->")
        .unwrap_or_else(|| panic!("`{start}` in docs/frontends.md is not closed"));
    let mut blocks = Vec::new();
    let mut lines = rest[..to].lines();
    while let Some(line) = lines.next() {
        if !line.starts_with("```") {
            continue;
        }
        let body: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .collect();
        let first = body.first().copied().unwrap_or_default();
        if let Some(header) = first.strip_prefix("# /") {
            let path = header
                .split([':', ' '])
                .next()
                .expect("split yields one item");
            blocks.push(Block::File {
                path: format!("/{path}"),
                append: header.contains("(append)"),
                text: body.join("\n") + "\n",
            });
        } else {
            blocks.push(Block::Commands(
                body.iter()
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .collect(),
            ));
        }
    }
    assert!(
        blocks.iter().any(|b| matches!(b, Block::File { .. }))
            && blocks.iter().any(|b| matches!(b, Block::Commands(_))),
        "walkthrough `{name}` has no files or no commands: {blocks:#?}"
    );
    blocks
}

/// The frontend of a walkthrough.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Frontend {
    Nginx,
    Haproxy,
    Varnish,
    Apache,
}

impl Frontend {
    fn name(self) -> &'static str {
        match self {
            Frontend::Nginx => "nginx",
            Frontend::Haproxy => "haproxy",
            Frontend::Varnish => "varnish",
            Frontend::Apache => "apache",
        }
    }

    /// The Debian package, and what it puts under /etc.
    fn package(self) -> (&'static str, &'static str) {
        match self {
            Frontend::Nginx => ("nginx", "nginx"),
            Frontend::Haproxy => ("haproxy", "haproxy"),
            Frontend::Varnish => ("varnish", "varnish"),
            Frontend::Apache => ("apache2", "apache2"),
        }
    }
}

/// What a run of a walkthrough must come to.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// The request reaches both example backends.
    Backends,
    /// The request gets an answer, but not from a backend (Debian's default site).
    NotBackends,
    /// The frontend does not start, and says this.
    StartFails(&'static str),
    /// The frontend starts, but answers with this status.
    StartAnswers(u16),
}

/// The prefix with Debian's files, the backends, and what the walkthrough started.
struct Prefix {
    frontend: Frontend,
    dir: Test,
    /// Where port 80 (Varnish: 6081) went.
    port: u16,
    /// Varnish: where the admin port 6082 went.
    admin: u16,
    backends: Vec<Backend>,
    daemon: Option<Group>,
    processes: Vec<Group>,
}

impl Prefix {
    fn new(frontend: Frontend) -> Prefix {
        let dir = Test::world_readable("elasticd-walkthrough-");
        let backends = (0..3)
            .map(|i| Backend::start(&format!("b{i}"), Ipv4Addr::new(127, 0, 0, 10 + i), 2))
            .collect();
        let p = Prefix {
            frontend,
            dir,
            port: free_port(),
            admin: free_port(),
            backends,
            daemon: None,
            processes: Vec::new(),
        };
        p.install();
        p
    }

    fn root(&self) -> &str {
        self.dir.path_str()
    }

    /// An absolute path (`/etc/...`) in the prefix.
    fn at(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("{}{path}", self.root()))
    }

    /// The page's text (or one of Debian's files) as it reads in the prefix.
    fn rewrite(&self, text: &str) -> String {
        let root = self.root();
        let mut out = String::with_capacity(text.len() + 256);
        let mut rest = text;
        'scan: while !rest.is_empty() {
            for top in ["/etc/", "/run/", "/var/"] {
                if rest.starts_with(top) {
                    let before = out.chars().last();
                    if before.is_none_or(|c| c.is_whitespace() || "\"'=([,:".contains(c)) {
                        out.push_str(root);
                    }
                    out.push_str(top);
                    rest = &rest[top.len()..];
                    continue 'scan;
                }
            }
            let c = rest.chars().next().expect("not empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
        let port = self.port;
        let admin = self.admin;
        let mut out = out
            .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
            .replace("listen 80 ", &format!("listen 127.0.0.1:{port} "))
            .replace("listen [::]:80", &format!("listen [::1]:{port}"))
            .replace("bind :80", &format!("bind 127.0.0.1:{port}"))
            .replace("Listen 80\n", &format!("Listen 127.0.0.1:{port}\n"))
            .replace("*:80>", &format!("*:{port}>"))
            .replace("-a :6081", &format!("-a 127.0.0.1:{port}"))
            .replace("localhost:6082", &format!("127.0.0.1:{admin}"));
        for (i, example) in ["10.0.0.11:8080", "10.0.0.12:8080"].iter().enumerate() {
            out = out.replace(example, &self.backends[i].target());
        }
        out
    }

    /// What installing the frontend's package and elasticd's created: a copy of Debian's files
    /// under /etc, the directories the package and its unit make, and the wrappers.
    fn install(&self) {
        let (package, etc) = self.frontend.package();
        let from = Path::new("/etc").join(etc);
        assert!(
            from.is_dir(),
            "/etc/{etc} is missing: install the Debian package {package}"
        );
        self.copy_tree(&from, &self.at(&format!("/etc/{etc}")));
        let mut dirs = vec!["/etc/elasticd", "/run/lock", "/var/lib"];
        match self.frontend {
            Frontend::Nginx => dirs.extend(["/var/log/nginx", "/var/lib/nginx"]),
            Frontend::Haproxy => {
                dirs.extend(["/run/haproxy", "/var/lib/haproxy", "/etc/default"]);
                if let Ok(text) = std::fs::read_to_string("/etc/default/haproxy") {
                    self.write("/etc/default/haproxy", &text, false);
                }
            }
            Frontend::Varnish => dirs.extend(["/var/lib/varnish"]),
            Frontend::Apache => {
                dirs.extend(["/var/log/apache2", "/var/lib/apache2"]);
                // mod_mime reads the system's list (Debian's media-types package).
                let types = std::fs::read_to_string("/etc/mime.types").unwrap_or_default();
                self.write("/etc/mime.types", &types, false);
            }
        }
        for d in dirs {
            std::fs::create_dir_all(self.at(d)).expect("create a prefix dir");
        }
        // As on Debian, /var/run is a link to /run, and /var/lock to /run/lock.
        std::os::unix::fs::symlink("../run", self.at("/var/run")).expect("link /var/run");
        std::os::unix::fs::symlink("../run/lock", self.at("/var/lock")).expect("link /var/lock");
        if self.frontend == Frontend::Nginx {
            // nginx's compiled-in temp paths (/var/lib/nginx/...), moved like the rest.
            let conf = self.at("/etc/nginx/nginx.conf");
            let text = std::fs::read_to_string(&conf).expect("read nginx.conf");
            let temp: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
                .iter()
                .map(|t| format!("\t{t}_temp_path {}/var/lib/nginx/{t};\n", self.root()))
                .collect();
            std::fs::write(
                &conf,
                text.replacen("http {\n", &format!("http {{\n{temp}"), 1),
            )
            .expect("write nginx.conf");
        }
        let root = self.root();
        let bin = self.dir.join("bin");
        std::fs::create_dir_all(&bin).expect("create bin");
        std::os::unix::fs::symlink(ELASTICD, bin.join("elasticd")).expect("link elasticd");
        let nginx = program("nginx", "nginx");
        let varnishd = program("varnishd", "varnish");
        let haproxy = program("haproxy", "haproxy");
        self.script(
            "nginx",
            &format!("exec {nginx} -c {root}/etc/nginx/nginx.conf -e stderr \"$@\"\n"),
        );
        self.script(
            "varnishd",
            &format!(
                "case \" $* \" in\n  *\" -C \"*) exec {varnishd} -n {root}/var/lib/varnish/check \"$@\" ;;\n  \
                 *) exec {varnishd} -n {root}/var/lib/varnish/varnishd \"$@\" ;;\nesac\n"
            ),
        );
        // ExecReload of Debian's units.
        self.script(
            "systemctl",
            &format!(
                "set -e\n[ \"$1\" = reload ] || {{ echo \"systemctl (walkthrough test): only reload runs here: $*\" >&2; exit 1; }}\n\
                 case \"$2\" in\n\
                 haproxy)\n  {haproxy_env}\n  {haproxy} -Ws -f \"$CONFIG\" -c -q $EXTRAOPTS\n  kill -USR2 \"$(cat \"$PIDFILE\")\" ;;\n\
                 nginx) nginx -g 'daemon on; master_process on;' -s reload ;;\n\
                 apache2) apachectl graceful ;;\n\
                 *) echo \"systemctl (walkthrough test): no unit $2\" >&2; exit 1 ;;\nesac\n",
                haproxy_env = self.haproxy_env().replace('\n', "\n  "),
            ),
        );
    }

    /// The environment of Debian's haproxy unit, as shell.
    fn haproxy_env(&self) -> String {
        let root = self.root();
        format!(
            "CONFIG={root}/etc/haproxy/haproxy.cfg\nPIDFILE={root}/run/haproxy.pid\n\
             EXTRAOPTS=\"-S {root}/run/haproxy-master.sock\"\n\
             [ ! -f {root}/etc/default/haproxy ] || . {root}/etc/default/haproxy"
        )
    }

    fn script(&self, name: &str, body: &str) {
        let path = self.dir.join("bin").join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).expect("write a wrapper");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod a wrapper");
    }

    /// Copies `from` into `to`, with paths and ports rewritten; links stay links (`a2dissite`
    /// removes only links), pointing into the prefix when they pointed into /etc.
    fn copy_tree(&self, from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("create a copied dir");
        for entry in std::fs::read_dir(from).expect("read a Debian dir") {
            let entry = entry.expect("read a Debian dir entry");
            let target = to.join(entry.file_name());
            let kind = entry.file_type().expect("file type");
            if kind.is_symlink() {
                let link = std::fs::read_link(entry.path()).expect("read a link");
                let link = self.rewrite(&link.to_string_lossy());
                std::os::unix::fs::symlink(link, &target).expect("copy a link");
            } else if kind.is_dir() {
                self.copy_tree(&entry.path(), &target);
            } else {
                let bytes = std::fs::read(entry.path()).expect("read a Debian file");
                let bytes = match String::from_utf8(bytes) {
                    Ok(text) => self.rewrite(&text).into_bytes(),
                    Err(e) => e.into_bytes(),
                };
                std::fs::write(&target, bytes).expect("copy a Debian file");
                let mode = entry.metadata().expect("metadata").permissions().mode();
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                    .expect("copy a mode");
            }
        }
    }

    /// Writes (or appends to) a file of the page, rewritten.
    fn write(&self, path: &str, text: &str, append: bool) {
        let path = self.at(path);
        std::fs::create_dir_all(path.parent().expect("a file has a dir")).expect("create dir");
        let mut text = self.rewrite(text);
        if append {
            let old = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
            text = format!("{old}\n{text}");
        }
        std::fs::write(&path, text).expect("write a file of the walkthrough");
    }

    fn path_var(&self) -> String {
        format!(
            "{}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            self.root()
        )
    }

    /// The environment every command gets (Apache's tools read theirs from the environment).
    fn env(&self) -> Vec<(&'static str, String)> {
        let root = self.root();
        vec![
            ("PATH", self.path_var()),
            ("NO_COLOR", "1".into()),
            ("APACHE_CONFDIR", format!("{root}/etc/apache2")),
            ("APACHE_STATE_DIRECTORY", format!("{root}/var/lib/apache2")),
        ]
    }

    fn logs(&self) -> String {
        let mut text = String::new();
        for g in self.daemon.iter().chain(&self.processes) {
            text.push_str(&format!("--- {}:\n{}\n", g.what, g.log()));
        }
        for log in ["/var/log/nginx/error.log", "/var/log/apache2/error.log"] {
            if let Ok(log_text) = std::fs::read_to_string(self.at(log)) {
                text.push_str(&format!("--- {log}:\n{log_text}\n"));
            }
        }
        text
    }

    /// Runs one line of the page.
    /// Runs one line of the page; false when the walkthrough ends here (an expected failure).
    fn command(&mut self, line: &str, expect: Expect) -> bool {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["systemctl", "restart" | "start", unit, ..] => return self.start(unit, expect),
            ["systemctl", "enable", "--now", "elasticd", ..] => {
                return self.start("elasticd", expect);
            }
            ["systemctl", "reload", "elasticd", ..] => self.reload_daemon(),
            ["curl", ..] => self.request(expect),
            _ => {
                let out = Command::new("sh")
                    .args(["-ec", &self.rewrite(line)])
                    .current_dir(self.dir.path())
                    .envs(self.env())
                    .output()
                    .expect("run sh");
                assert!(
                    out.status.success(),
                    "{:?}: `{line}` failed ({}):\n{}{}",
                    self.frontend,
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        true
    }

    /// Starts a unit's `ExecStart` (Debian's) in the foreground and waits until it answers;
    /// with [`Expect::StartFails`], waits until it has failed instead, and returns false.
    fn start(&mut self, unit: &str, expect: Expect) -> bool {
        let root = self.root().to_string();
        let argv: Vec<String> = match unit {
            "elasticd" => {
                let group = support::Cmd::new(self.dir.path())
                    .args(["run", "--config"])
                    .arg(self.at("/etc/elasticd/config.yaml"))
                    .envs(self.env())
                    .daemon();
                self.daemon = Some(group);
                let daemon = self.daemon.as_mut().expect("just set");
                daemon.wait_for_log("elasticd to start", PATIENCE, |l| l.contains("started"));
                return true;
            }
            "nginx" => vec![
                "nginx".into(),
                "-g".into(),
                "daemon off; master_process on;".into(),
            ],
            "haproxy" => vec![
                "sh".into(),
                "-c".into(),
                format!(
                    "{}\nexec haproxy -Ws -f \"$CONFIG\" -p \"$PIDFILE\" $EXTRAOPTS",
                    self.haproxy_env()
                ),
            ],
            "varnish" => {
                // Debian's unit, with its own ports moved (and less cache memory).
                let line = "varnishd -j unix,user=vcache -F -a :6081 -T localhost:6082 \
                            -f /etc/varnish/default.vcl -S /etc/varnish/secret -s malloc,32m";
                self.rewrite(line).split(' ').map(String::from).collect()
            }
            // `apachectl start` (Debian's ExecStart) in the foreground.
            "apache2" => vec!["apachectl".into(), "-DFOREGROUND".into()],
            other => panic!("the walkthrough starts an unknown unit `{other}`"),
        };
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).current_dir("/").envs(self.env());
        let log = PathBuf::from(format!("{root}/{unit}.log"));
        self.processes.push(Group::spawn(unit, cmd, &log));
        if let Expect::StartFails(message) = expect {
            let frontend = self.processes.last_mut().expect("just started");
            let code = frontend.wait_exit(&format!("{unit} to refuse to start"), PATIENCE);
            let log = frontend.log();
            assert!(
                code != 0 && log.contains(message),
                "{unit} exited with {code}, and without `{message}`:\n{log}"
            );
            return false;
        }
        let deadline = Instant::now() + PATIENCE;
        while get(self.port).is_err() {
            let logs = self.logs();
            self.processes
                .last_mut()
                .expect("just started")
                .assert_running(&logs);
            assert!(Instant::now() < deadline, "{unit} did not answer:\n{logs}");
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Expect::StartAnswers(status) = expect {
            let answer = get(self.port);
            assert!(
                answer.as_ref().is_ok_and(|(s, _)| *s == status),
                "{unit} answered {answer:?}, not {status}"
            );
            return false;
        }
        true
    }

    /// The unit's `ExecReload`: SIGHUP; waits until the daemon has read the config again and
    /// applied what changed.
    fn reload_daemon(&mut self) {
        let daemon = self
            .daemon
            .as_mut()
            .expect("the walkthrough started elasticd");
        let reloads = |log: &str| log.matches("config reloaded").count();
        let before = reloads(&daemon.log());
        daemon.signal(Signal::SIGHUP);
        daemon.wait_for_log("the new config", PATIENCE, |l| reloads(l) > before);
        let applied = |log: &str| log.matches("applied").count();
        let before = applied(&daemon.log());
        daemon.wait_for_log("the apply of the new config", PATIENCE, |l| {
            applied(l) > before
        });
    }

    /// The walkthrough's request: it must reach both example backends (or, without the line
    /// that disables Debian's default site, neither).
    fn request(&self, expect: Expect) {
        let want: BTreeSet<String> = ["b0", "b1"].map(String::from).into();
        let mut seen = BTreeSet::new();
        for _ in 0..20 {
            let answer = get(self.port);
            let from_backend = answer
                .as_ref()
                .is_ok_and(|(status, body)| *status == 200 && want.contains(body));
            if expect == Expect::NotBackends {
                assert!(
                    answer.is_ok() && !from_backend,
                    "{:?}: with Debian's default site, the request got {answer:?}",
                    self.frontend
                );
                return;
            }
            assert!(
                from_backend,
                "{:?}: the walkthrough's request got {answer:?}, not a backend's answer\n{}",
                self.frontend,
                self.logs()
            );
            seen.insert(answer.expect("checked").1);
        }
        assert_eq!(
            seen, want,
            "{:?}: not every backend answered",
            self.frontend
        );
    }

    /// Replaces the backends with the third one, and waits for the daemon to move the traffic.
    fn move_traffic(&mut self) {
        let daemon = self
            .daemon
            .as_ref()
            .expect("the walkthrough starts elasticd");
        std::fs::write(
            self.at("/etc/elasticd/web.yaml"),
            format!("- targets: [\"{}\"]\n", self.backends[2].target()),
        )
        .expect("write web.yaml");
        daemon.signal(Signal::SIGUSR1);
        let deadline = Instant::now() + PATIENCE;
        let mut in_a_row = 0;
        while in_a_row < 10 {
            match get(self.port) {
                Ok((200, body)) if body == "b2" => in_a_row += 1,
                _ => in_a_row = 0,
            }
            assert!(
                Instant::now() < deadline,
                "{:?}: the daemon did not move the traffic to b2\n{}",
                self.frontend,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        // The daemon first, so that it does not reload a frontend that is going away.
        self.daemon.take();
        self.processes.clear();
    }
}

/// Runs the walkthrough of `frontend`, without the line starting with `skip` (page text, which
/// must be there), until it has come to `expect`.
fn run(frontend: Frontend, skip: Option<&str>, expect: Expect) -> Prefix {
    run_all(frontend, &[frontend.name()], skip, expect)
}

/// Runs the walkthroughs `names` one after the other in one prefix, as [`run`] does one.
fn run_all(frontend: Frontend, names: &[&str], skip: Option<&str>, expect: Expect) -> Prefix {
    let mut prefix = Prefix::new(frontend);
    let mut skipped = false;
    let blocks = names.iter().flat_map(|name| walkthrough(name));
    'blocks: for block in blocks {
        match block {
            Block::File { path, append, text } => prefix.write(&path, &text, append),
            Block::Commands(lines) => {
                for line in lines {
                    if skip.is_some_and(|s| line.starts_with(s)) {
                        skipped = true;
                        continue;
                    }
                    if !prefix.command(&line, expect) {
                        break 'blocks;
                    }
                }
            }
        }
    }
    assert!(
        skip.is_none() || skipped,
        "the {frontend:?} walkthrough has no line `{}`",
        skip.unwrap_or_default()
    );
    prefix
}

fn walkthrough_works(frontend: Frontend) {
    let mut prefix = run(frontend, None, Expect::Backends);
    prefix.move_traffic();
}

/// The frontend started before the file it includes is rendered does not start, as the page
/// says: the render comes first.
fn render_comes_first(frontend: Frontend, message: &'static str) {
    let skip = "elasticd render --no-reload";
    run(frontend, Some(skip), Expect::StartFails(message));
}

#[test]
fn nginx_walkthrough_serves_the_backends() {
    walkthrough_works(Frontend::Nginx);
}

#[test]
fn nginx_walkthrough_needs_debians_default_site_removed() {
    let skip = "rm /etc/nginx/sites-enabled/default";
    run(Frontend::Nginx, Some(skip), Expect::NotBackends);
}

#[test]
fn nginx_walkthrough_needs_the_render_before_the_start() {
    render_comes_first(Frontend::Nginx, "host not found in upstream \"web\"");
}

#[test]
fn haproxy_walkthrough_serves_the_backends() {
    walkthrough_works(Frontend::Haproxy);
}

#[test]
fn haproxy_runtime_walkthrough_switches_to_slots_once_then_updates_in_place() {
    let names = ["haproxy", "haproxy-runtime"];
    let mut prefix = run_all(Frontend::Haproxy, &names, None, Expect::Backends);
    let log = |p: &Prefix| p.daemon.as_ref().expect("started").log();
    let first = "first switch to slots: backend `web` in ";
    assert!(log(&prefix).contains(first), "{}", prefix.logs());
    prefix.move_traffic();
    let daemon = prefix.daemon.as_mut().expect("started");
    daemon.wait_for_log("the in-place update", PATIENCE, |l| {
        l.contains("applied web +1/-2") && l.contains("updated haproxy in place (no reload)")
    });
    assert_eq!(log(&prefix).matches(first).count(), 1, "{}", prefix.logs());
}

#[test]
fn haproxy_walkthrough_needs_the_render_before_the_start() {
    render_comes_first(Frontend::Haproxy, "web-backend.cfg");
}

#[test]
fn varnish_walkthrough_serves_the_backends() {
    walkthrough_works(Frontend::Varnish);
}

#[test]
fn varnish_walkthrough_needs_the_render_before_the_start() {
    render_comes_first(Frontend::Varnish, "web-backends.vcl");
}

#[test]
fn apache_walkthrough_serves_the_backends() {
    walkthrough_works(Frontend::Apache);
}

#[test]
fn apache_walkthrough_needs_debians_default_site_disabled() {
    run(
        Frontend::Apache,
        Some("a2dissite 000-default"),
        Expect::NotBackends,
    );
}

#[test]
fn apache_walkthrough_needs_the_render_before_the_start() {
    // Apache starts without the balancer's members, and has none to send to.
    let skip = "elasticd render --no-reload";
    run(Frontend::Apache, Some(skip), Expect::StartAnswers(503));
}
