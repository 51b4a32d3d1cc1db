//! What the integration tests share. Every file in `tests/` declares `mod support;` and uses a
//! part of this; the rest is compiled but unused in that binary (hence the one `allow` below).
//!
//! - [`Test`]: a temp dir for one test, with the files it writes and reads, and the `elasticd`
//!   runs in it ([`Cmd`], modelled on casey/just's `tests/test.rs`): build the invocation, then
//!   [`Cmd::run`] it to an [`Output`], or start it as a daemon ([`Cmd::daemon`]).
//! - [`Group`]: a process started in its own process group (a daemon, a frontend, an emulator);
//!   the whole group is killed with SIGKILL when the guard is dropped, so that a failing test
//!   leaves nothing running. Only processes a test started are ever signalled, by their PID.
//!   [`PidFile`] does the same for a process that a check or reload records in a file.
//! - Small helpers: [`free_port`], [`http_get`], [`program`], [`path_with_sbin`],
//!   [`wait_until`], [`yaml_str`], [`targets_json`].
//! - [`browser`]: a headless Chromium driven through chromedriver (the status page tests).
//! - [`server`]: a daemon with its operations server, HTTP clients, the OpenAPI schemas.
//! - [`etcd`] (feature `etcd`): a real etcd cluster of 1 or 3 members for the fleet tests.
//! - [`live`]: real frontends under load (`tests/live.rs`); [`moto_server`] and, with the `aws`
//!   feature, [`moto`]: a local AWS API emulator.
//!
//! Every address a test talks to is on loopback.

#![allow(dead_code)]

pub mod browser;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod live;
#[cfg(feature = "aws")]
pub mod moto;
pub mod moto_server;
pub mod server;

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;
use tempfile::TempDir;

/// The binary under test.
pub const ELASTICD: &str = env!("CARGO_BIN_EXE_elasticd");

// ---------------------------------------------------------------------------------------------
// The test directory

/// A temp dir for one test, removed when dropped. Set it up with the builder methods
/// ([`Test::config`], [`Test::file`], [`Test::executable`]), then run `elasticd` in it with
/// [`Test::elasticd`] or [`Test::render`] as often as the test needs.
pub struct Test {
    dir: TempDir,
}

impl Default for Test {
    fn default() -> Test {
        Test::new()
    }
}

impl Test {
    /// A fresh private temp dir.
    pub fn new() -> Test {
        Test {
            dir: tempfile::tempdir().expect("create temp dir"),
        }
    }

    /// A fresh temp dir named `prefix…` that other users can read (mode 0755): varnishd, run as
    /// root, compiles VCL as `vcache`, and nginx and httpd workers run as `nobody`.
    pub fn world_readable(prefix: &str) -> Test {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("create temp dir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .expect("chmod 755 temp dir");
        Test { dir }
    }

    /// Writes `config.yaml`.
    pub fn config(self, yaml: &str) -> Test {
        self.write("config.yaml", yaml);
        self
    }

    /// Writes a file (see [`Test::write`]).
    pub fn file(self, name: &str, text: &str) -> Test {
        self.write(name, text);
        self
    }

    /// Writes an executable script (see [`Test::write_executable`]).
    pub fn executable(self, name: &str, text: &str) -> Test {
        self.write_executable(name, text);
        self
    }

    /// The dir.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The dir as a string (temp dirs are UTF-8).
    pub fn path_str(&self) -> &str {
        self.path().to_str().expect("UTF-8 temp dir")
    }

    /// A path in the dir.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path().join(name)
    }

    /// Writes `name` (parent dirs created, mode 0644) through a rename, as a real producer of
    /// locator files should, so that a running daemon never reads half a file.
    pub fn write(&self, name: &str, text: &str) {
        write_file(&self.join(name), text, 0o644);
    }

    /// Writes an executable script (mode 0755).
    pub fn write_executable(&self, name: &str, text: &str) {
        write_file(&self.join(name), text, 0o755);
    }

    /// A file's text, or "" when it does not exist.
    pub fn read(&self, name: &str) -> String {
        fs::read_to_string(self.join(name)).unwrap_or_default()
    }

    /// A file's text as JSON; panics, naming the file, when it is missing or not JSON.
    pub fn json(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(&self.read(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// Whether `name` exists.
    pub fn exists(&self, name: &str) -> bool {
        self.join(name).exists()
    }

    /// How many lines `name` has (0 when it does not exist).
    pub fn lines(&self, name: &str) -> usize {
        self.read(name).lines().count()
    }

    /// How many reloads the test's reload command counted: the lines of `reloads`.
    pub fn reloads(&self) -> usize {
        self.lines("reloads")
    }

    /// `elasticd ARGS` in this dir.
    pub fn elasticd<I, S>(&self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Cmd::new(self.path()).args(args)
    }

    /// `elasticd render --config config.yaml` in this dir.
    pub fn render(&self) -> Cmd {
        self.elasticd(["render", "--config", "config.yaml"])
    }
}

/// Writes `path` through a temp file beside it and a rename, with `mode`.
pub fn write_file(path: &Path, text: &str, mode: u32) {
    let parent = path.parent().expect("a file in a dir");
    fs::create_dir_all(parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
    let name = path.file_name().expect("a file name").to_string_lossy();
    let tmp = parent.join(format!(".{name}.tmp"));
    fs::write(&tmp, text).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).expect("chmod");
    fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

// ---------------------------------------------------------------------------------------------
// Running elasticd

/// One `elasticd` invocation, run in a dir with stdin closed, `NO_COLOR=1`, and none of
/// `ELASTICD_CONFIG`, `ELASTICD_LOG`, `ELASTICD_LOG_FORMAT`, `RUST_LOG` from the caller's
/// environment (a test sets them with [`Cmd::env`] where it means to).
#[must_use]
pub struct Cmd {
    dir: PathBuf,
    args: Vec<OsString>,
    clear_env: bool,
    /// In order; `None` removes the variable.
    env: Vec<(OsString, Option<OsString>)>,
    /// Descriptors it inherits (see [`Cmd::inherit_fd`]).
    inherit: Vec<(i32, PathBuf)>,
}

impl Cmd {
    /// `elasticd` with no arguments, run in `dir`.
    pub fn new(dir: &Path) -> Cmd {
        Cmd {
            dir: dir.to_path_buf(),
            args: Vec::new(),
            clear_env: false,
            env: Vec::new(),
            inherit: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Cmd {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Cmd {
        self.env.push((
            key.as_ref().to_os_string(),
            Some(value.as_ref().to_os_string()),
        ));
        self
    }

    pub fn envs<I, K, V>(self, vars: I) -> Cmd
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        vars.into_iter().fold(self, |cmd, (k, v)| cmd.env(k, v))
    }

    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Cmd {
        self.env.push((key.as_ref().to_os_string(), None));
        self
    }

    /// Starts from an empty environment (plus `NO_COLOR`) instead of the caller's.
    pub fn env_clear(mut self) -> Cmd {
        self.clear_env = true;
        self.env.clear();
        self
    }

    /// It inherits descriptor `fd` (above 2), open for reading on `path` (in its dir unless
    /// absolute) and without close-on-exec, as from a parent that leaks one (a shell's
    /// `exec 7<file`). The file is opened when the command is built; in the child, between fork
    /// and exec, it is dup2'd to `fd` (whatever the child had there, such as the pipe the
    /// standard library reports a failed exec through, is closed first).
    pub fn inherit_fd(mut self, fd: i32, path: impl AsRef<Path>) -> Cmd {
        assert!(fd > 2, "descriptor {fd} is stdin, stdout or stderr");
        self.inherit.push((fd, path.as_ref().to_path_buf()));
        self
    }

    /// The `Command`, ready to run.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(ELASTICD);
        cmd.args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        if self.clear_env {
            cmd.env_clear();
        }
        cmd.env_remove("ELASTICD_CONFIG")
            .env_remove("ELASTICD_LOG")
            .env_remove("ELASTICD_LOG_FORMAT")
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1");
        for (key, value) in &self.env {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        for (fd, path) in &self.inherit {
            let path = self.dir.join(path);
            let file = fs::File::open(&path)
                .unwrap_or_else(|e| panic!("open {} to inherit: {e}", path.display()));
            let fd = *fd;
            // SAFETY: the closure runs in the forked child before exec, where only
            // async-signal-safe calls are allowed: it makes raw syscalls (dup2(2), fcntl(2)) on
            // descriptor numbers only and allocates nothing.
            unsafe {
                cmd.pre_exec(move || {
                    let from = file.as_raw_fd();
                    // dup2 onto itself would keep close-on-exec; clear it instead.
                    let rc = if from == fd {
                        libc::fcntl(fd, libc::F_SETFD, 0)
                    } else {
                        libc::dup2(from, fd)
                    };
                    if rc == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        cmd
    }

    /// Runs it to the end.
    pub fn run(self) -> Output {
        Output::from(self.command().output().expect("run elasticd"))
    }

    /// Runs it to the end like [`Cmd::run`], but as the leader of a new process group and for at
    /// most `limit`: when it has not exited by then, the group is killed with SIGKILL and the test
    /// fails, naming the arguments and showing what it printed. Whatever it left running in its
    /// group is killed too once it has exited. The leader is reaped only after that, so its PID
    /// (the group's id) cannot have been reused when the group is signalled. The programs
    /// elasticd runs (plugins, checks, reloads) get process groups of their own, which this does
    /// not reach: a test whose program may hang kills that group itself (see `tests/crash.rs`).
    pub fn run_within(self, limit: Duration) -> Output {
        let streams = tempfile::tempdir().expect("create temp dir");
        let (stdout, stderr) = (streams.path().join("stdout"), streams.path().join("stderr"));
        let mut child = self
            .command()
            .process_group(0)
            .stdout(fs::File::create(&stdout).expect("create stdout file"))
            .stderr(fs::File::create(&stderr).expect("create stderr file"))
            .spawn()
            .expect("run elasticd");
        let leader = Pid::from_raw(child.id() as i32);
        let exited = poll_until(limit, || exit_seen(leader).is_some());
        let _ = killpg(leader, Signal::SIGKILL);
        let status = child.wait().expect("wait for elasticd");
        let read =
            |path: &Path| String::from_utf8_lossy(&fs::read(path).unwrap_or_default()).into_owned();
        let output = Output {
            code: status.code().unwrap_or(-1),
            stdout: read(&stdout),
            stderr: read(&stderr),
        };
        assert!(
            exited,
            "elasticd {:?} did not finish within {limit:?}\n{output}",
            self.args
        );
        output
    }

    /// Starts it (usually `run`) as the leader of a new process group, stdout and stderr in
    /// `daemon.log` in its dir; it is killed when the guard is dropped.
    pub fn daemon(self) -> Group {
        let log = self.dir.join("daemon.log");
        Group::spawn("elasticd run", self.command(), &log)
    }
}

/// What a finished process did.
#[derive(Debug)]
pub struct Output {
    /// The exit code; -1 when it was killed by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for Output {
    fn from(out: std::process::Output) -> Output {
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// The exit code and both streams, for assertion messages.
impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Output {
    /// Asserts exit code 0, showing both streams otherwise.
    pub fn success(self) -> Output {
        assert_eq!(
            self.code, 0,
            "failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts exit status `code` and that stderr contains `want`, showing stderr otherwise.
    pub fn exited_saying(&self, code: i32, want: &str) {
        assert_eq!(self.code, code, "{}", self.stderr);
        assert!(self.stderr.contains(want), "{}", self.stderr);
    }

    /// A plugin's failure: a non-zero exit, nothing on stdout, and one line on stderr that
    /// contains `want`.
    pub fn failed_with(&self, want: &str) {
        assert_ne!(self.code, 0, "plugin succeeded:\n{}", self.stdout);
        assert_eq!(self.stdout, "", "a failing plugin printed on stdout");
        assert_eq!(
            self.stderr.trim_end().lines().count(),
            1,
            "want one line on stderr, got:\n{}",
            self.stderr
        );
        assert!(
            self.stderr.contains(want),
            "stderr lacks {want:?}:\n{}",
            self.stderr
        );
    }

    /// Stdout as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A process and its process group, killed with SIGKILL when dropped.
pub struct Group {
    child: Option<Child>,
    /// What it is, for messages.
    pub what: String,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

impl Group {
    /// Spawns `cmd` as the leader of a new process group, stdin closed, stdout and stderr into
    /// `log`.
    pub fn spawn(what: &str, mut cmd: Command, log: &Path) -> Group {
        let out = fs::File::create(log).expect("create log");
        let err = out.try_clone().expect("dup log");
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        Group {
            child: Some(child),
            what: what.to_string(),
            log: log.to_path_buf(),
        }
    }

    /// The leader's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `signal` to the leader.
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid() as i32), signal).expect("signal process");
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The leader's exit status, once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Panics, with `context`, when the leader has exited.
    pub fn assert_running(&mut self, context: &str) {
        if let Some(status) = self.exited() {
            panic!("{} exited with {status}; log:\n{context}", self.what);
        }
    }

    /// Waits until `cond` holds; panics with `what` and the log after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
        wait_until(
            what,
            timeout,
            || format!("{} log:\n{}", self.what, self.log()),
            cond,
        );
    }

    /// Sends `signal` to the leader and waits up to `timeout` for it to exit, then kills what
    /// is left of the group. The leader's exit code; `None` when it had to be killed or died of
    /// a signal.
    pub fn stop_with(&mut self, signal: Signal, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let group = Pid::from_raw(child.id() as i32);
        let _ = kill(group, signal);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let _ = killpg(group, Signal::SIGKILL);
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = killpg(group, Signal::SIGKILL);
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `cond` holds for its log so far; panics with `what` and the log when the
    /// leader exits first, or after `timeout`.
    pub fn wait_for_log(
        &mut self,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut(&str) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if cond(&log) {
                return;
            }
            if let Some(status) = exit_seen(Pid::from_raw(self.pid() as i32)) {
                panic!(
                    "{} exited ({status}) while waiting for {what}; log:\n{log}",
                    self.what
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n{} log:\n{log}",
                    self.what
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for the leader to exit on its own (nothing is sent to it), then
    /// kills what is left of its group and reaps the leader; its exit code, -1 when a signal
    /// killed it. Panics with `what` and the log when it is still running by then (the guard
    /// kills the group when dropped). The leader is seen exited without being reaped until its
    /// group has been signalled, so that the group's id cannot have been reused.
    pub fn wait_exit(&mut self, what: &str, timeout: Duration) -> i32 {
        let leader = Pid::from_raw(self.pid() as i32);
        wait_until(
            what,
            timeout,
            || format!("{} log:\n{}", self.what, self.log()),
            || exit_seen(leader).is_some(),
        );
        let mut child = self.child.take().expect("running");
        let _ = killpg(leader, Signal::SIGKILL);
        let status = child.wait().expect("wait for the leader");
        status.code().unwrap_or(-1)
    }

    /// SIGTERM to the leader, and its exit code once it has exited (`None` after 10 s, when it
    /// is killed).
    pub fn stop(mut self) -> Option<i32> {
        self.stop_with(Signal::SIGTERM, Duration::from_secs(10))
    }
}

/// How the child `pid` ended, once it has, seen without reaping it (`WNOWAIT`): until it is
/// reaped its PID, and so its process group's id, cannot be reused, so that killing the group
/// afterwards reaches only what the test started.
fn exit_seen(pid: Pid) -> Option<String> {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    match waitid(Id::Pid(pid), flags) {
        Ok(WaitStatus::StillAlive) => None,
        Ok(WaitStatus::Exited(_, code)) => Some(format!("exit code {code}")),
        Ok(WaitStatus::Signaled(_, signal, _)) => Some(format!("signal {signal}")),
        Ok(status) => Some(format!("{status:?}")),
        // ECHILD: already reaped (by `Group::exited`, say).
        Err(e) => Some(format!("gone ({e})")),
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

/// A process that a program elasticd ran for the test (a check, a reload, or a child of one)
/// recorded by writing its PID to a file, killed with SIGKILL when the guard is dropped, with the
/// process group it leads, if any: elasticd runs those programs in process groups of their own,
/// which no [`Group`] reaches. Nothing is signalled when the file holds no PID, or when that
/// process no longer runs in the file's dir (it has exited, and the PID may have been reused).
pub struct PidFile(PathBuf);

impl PidFile {
    /// A guard for the PID that will be written to `path`.
    pub fn new(path: impl Into<PathBuf>) -> PidFile {
        PidFile(path.into())
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let Some(pid) = fs::read_to_string(&self.0)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .filter(|&pid| pid > 1)
        else {
            return;
        };
        let dir = self.0.parent().and_then(|d| fs::canonicalize(d).ok());
        let cwd = fs::read_link(format!("/proc/{pid}/cwd")).ok();
        if dir.is_none() || cwd != dir {
            return;
        }
        let pid = Pid::from_raw(pid);
        let _ = killpg(pid, Signal::SIGKILL);
        let _ = kill(pid, Signal::SIGKILL);
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// A free loopback port for a server a test starts, below the kernel's ephemeral range.
///
/// A port the OS hands out for `bind(0)` comes from the ephemeral range, from which every
/// outgoing connection (to etcd, moto, a backend) also takes its local port: with 20 daemons
/// connecting out, one of them could take the port before the server that was meant to bind it.
/// Ports below the range are only ever taken by a bind, so a random one that binds now stays
/// free unless another test draws the same number.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    // Debian's default ephemeral range starts at 32768; stay below whatever it is here.
    let low: u16 = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (from, to) = (10_000u16, low.clamp(10_001, 32768));
    let random = RandomState::new();
    for attempt in 0u64..1000 {
        let draw = random.hash_one((std::process::id(), attempt));
        let port = from + (draw % u64::from(to - from)) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {from} and {to} after 1000 draws")
}

/// One `GET /` on a fresh connection to `127.0.0.1:port` (`Connection: close`): the body of a
/// 200, or what went wrong (the status line of any other answer).
pub fn http_get(port: u16) -> Result<String, String> {
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

/// Absolute path of a program on PATH or in the sbin dirs (where Debian puts the frontends'
/// binaries, and which a non-login PATH may lack); fails the test, naming the Debian package,
/// when it is missing.
pub fn program(name: &str, package: &str) -> String {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed: install the Debian package {package}")
        })
        .to_string_lossy()
        .into_owned()
}

/// The caller's PATH with the sbin dirs appended (`/usr/sbin:/sbin`), for an `elasticd` whose
/// config runs a frontend's program by name (`haproxy -c`, `varnishadm`).
pub fn path_with_sbin() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    format!("{path}:/usr/sbin:/sbin")
}

/// Polls `cond` every 20 ms until it holds or `timeout` has passed; whether it held.
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `cond` every 20 ms until it holds; panics with `what` and `context()` after `timeout`.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut context: impl FnMut() -> String,
    cond: impl FnMut() -> bool,
) {
    if !poll_until(timeout, cond) {
        panic!(
            "timed out after {timeout:?} waiting for {what}\n{}",
            context()
        );
    }
}

/// A YAML double-quoted string (JSON's string syntax is YAML's).
pub fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("string to JSON")
}

/// A YAML flow list of double-quoted strings.
pub fn yaml_list<S: AsRef<str>>(items: &[S]) -> String {
    let items: Vec<String> = items.iter().map(|s| yaml_str(s.as_ref())).collect();
    format!("[{}]", items.join(", "))
}

/// A `file` locator document (Prometheus file_sd) with one group of `targets`.
pub fn targets_json<S: AsRef<str>>(targets: &[S]) -> String {
    let quoted: Vec<String> = targets
        .iter()
        .map(|t| format!("\"{}\"", t.as_ref()))
        .collect();
    format!("[{{\"targets\": [{}]}}]", quoted.join(", "))
}
