//! The `haproxy_runtime` reload action: move servers in place through HAProxy's Runtime API,
//! and the `master_socket` reload: ask the master process of a master-worker HAProxy to reload.
//!
//! The installed file is the truth. After it passed the check and went into place, the action
//! compares the old and new files: when they differ only in server addresses, ports, weights and
//! `disabled` (what `set server` can change), it reads the live servers (`show servers state`),
//! sends the `set server` commands that make them match the new file, and reads them back. Any
//! other change (a new server name because the slots ran out, a new option, a first install, a
//! reload still owed) or any Runtime API failure runs the fallback reload instead, so that
//! HAProxy always ends up running what the file says and a restart loses nothing.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::haproxy_file::{self, BackendSection, ServerLine};
use super::{ChangedFile, FrontendError, RawReload, ReloadAction, ReloadContext};
use crate::value::HumanDuration;

/// How long a Runtime API update or a master-socket reload may take by default.
pub const DEFAULT_RUNTIME_TIMEOUT: Duration = Duration::from_secs(5);
/// More than this from one command is not read (`show servers state` is ~100 bytes a server).
const MAX_ANSWER: usize = 16 * 1024 * 1024;
/// `srv_admin_state` bit: forced maintenance (`disabled`, `set server ... state maint`).
const ADMIN_FORCED_MAINT: u32 = 0x01;
/// `srv_admin_state` bit: forced drain (`set server ... state drain`).
const ADMIN_FORCED_DRAIN: u32 = 0x08;

/// Where an HAProxy CLI socket listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeSocket {
    /// A Unix socket (`stats socket /run/haproxy/admin.sock`).
    Unix(PathBuf),
    /// A TCP address (`stats socket 127.0.0.1:9999`).
    Tcp(String),
}

impl RuntimeSocket {
    /// `host:port` or `[v6]:port` is TCP; anything else is a Unix socket path.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("the socket is empty; give a Unix socket path or HOST:PORT".into());
        }
        if let Some(path) = text.strip_prefix("unix@") {
            return Ok(RuntimeSocket::Unix(PathBuf::from(path)));
        }
        let tcp = text.rsplit_once(':').filter(|(host, port)| {
            !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        Ok(match tcp {
            Some(_) => RuntimeSocket::Tcp(text.to_string()),
            None => RuntimeSocket::Unix(PathBuf::from(text)),
        })
    }

    fn resolve_paths(&mut self, base: &Path) {
        if let RuntimeSocket::Unix(path) = self
            && path.is_relative()
        {
            *path = base.join(&*path);
        }
    }
}

impl fmt::Display for RuntimeSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeSocket::Unix(path) => write!(f, "{}", path.display()),
            RuntimeSocket::Tcp(addr) => f.write_str(addr),
        }
    }
}

/// The `haproxy_runtime` reload action.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawHaproxyRuntime")]
pub struct HaproxyRuntime {
    /// The stats socket, at `level admin` (`set server` is refused at lower levels).
    pub socket: RuntimeSocket,
    /// How long the whole in-place update may take.
    pub timeout: Duration,
    /// The reload used when the change cannot be made in place or the Runtime API fails.
    pub fallback: Box<ReloadAction>,
}

/// `haproxy_runtime: { socket, timeout, fallback }` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHaproxyRuntime {
    #[serde(default)]
    socket: Option<String>,
    #[serde(default)]
    timeout: Option<HumanDuration>,
    #[serde(default)]
    fallback: Option<Box<RawReload>>,
}

impl TryFrom<RawHaproxyRuntime> for HaproxyRuntime {
    type Error = String;

    fn try_from(raw: RawHaproxyRuntime) -> Result<Self, String> {
        let socket = raw.socket.ok_or(
            "`haproxy_runtime` needs `socket`: the stats socket path (`stats socket PATH level admin` \
             in haproxy.cfg) or HOST:PORT",
        )?;
        let socket =
            RuntimeSocket::parse(&socket).map_err(|e| format!("`haproxy_runtime.socket`: {e}"))?;
        let fallback = raw.fallback.ok_or(
            "`haproxy_runtime` needs `fallback`: the reload to use when servers cannot be moved in \
             place, e.g. `fallback: { master_socket: /run/haproxy-master.sock }`",
        )?;
        let fallback = ReloadAction::try_from(*fallback)
            .map_err(|e| format!("`haproxy_runtime.fallback`: {e}"))?;
        if matches!(
            fallback,
            ReloadAction::Spec(super::SpecAction::HaproxyRuntime(_))
        ) {
            return Err(
                "`haproxy_runtime.fallback` must be a real reload (`command`, `signal` or \
                 `master_socket`), not another `haproxy_runtime`"
                    .into(),
            );
        }
        Ok(HaproxyRuntime {
            socket,
            timeout: raw.timeout.map_or(DEFAULT_RUNTIME_TIMEOUT, |t| t.0),
            fallback: Box::new(fallback),
        })
    }
}

impl super::ReloadSpec for HaproxyRuntime {
    fn resolve_paths(&mut self, base: &Path) {
        self.socket.resolve_paths(base);
        self.fallback.resolve_paths(base);
    }

    fn program(&self) -> Option<&str> {
        self.fallback.program()
    }

    fn reload<'a>(
        &'a self,
        frontend: &'a str,
        cwd: &'a Path,
        context: &'a ReloadContext<'a>,
    ) -> crate::value::BoxFuture<'a, Result<super::Reloaded, FrontendError>> {
        Box::pin(async move {
            reload(frontend, self, cwd, context)
                .await
                .map(|outcome| match outcome {
                    RuntimeOutcome::InPlace(_) => super::Reloaded::InPlace,
                    RuntimeOutcome::Reloaded(_) => super::Reloaded::Reloaded,
                })
        })
    }
}

/// Resolves a relative master socket path against the config directory.
pub(super) fn resolve_socket(socket: &mut RuntimeSocket, base: &Path) {
    socket.resolve_paths(base);
}

/// Why talking to HAProxy's CLI failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No connection.
    #[error("cannot connect to the HAProxy socket {socket}: {source}")]
    Connect {
        /// The socket.
        socket: RuntimeSocket,
        /// The OS error.
        source: std::io::Error,
    },
    /// The connection broke.
    #[error("HAProxy socket {socket}: `{command}`: {source}")]
    Io {
        /// The socket.
        socket: RuntimeSocket,
        /// The command being sent.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The deadline passed.
    #[error("HAProxy socket {socket}: `{command}` did not finish within {}", humantime::format_duration(*timeout))]
    Timeout {
        /// The socket.
        socket: RuntimeSocket,
        /// The command in flight.
        command: String,
        /// The configured timeout.
        timeout: Duration,
    },
    /// HAProxy answered with an error.
    #[error("HAProxy socket {socket}: `{command}` failed; HAProxy said: {}", answer.trim())]
    Refused {
        /// The socket.
        socket: RuntimeSocket,
        /// The command.
        command: String,
        /// HAProxy's answer.
        answer: String,
    },
    /// The file names a server the running HAProxy does not have.
    #[error("HAProxy socket {socket}: the running HAProxy has no server `{backend}/{server}`")]
    MissingServer {
        /// The socket.
        socket: RuntimeSocket,
        /// The backend.
        backend: String,
        /// The server.
        server: String,
    },
    /// After the commands, the live servers still differ from the file.
    #[error(
        "HAProxy socket {socket}: after the update, backend `{backend}` still differs from the file: {pending}"
    )]
    NotConverged {
        /// The socket.
        socket: RuntimeSocket,
        /// The backend.
        backend: String,
        /// The commands that would still be needed.
        pending: String,
    },
}

/// One server as `show servers state` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveServer {
    /// Server name.
    pub name: String,
    /// `srv_addr`.
    pub address: String,
    /// `srv_port`.
    pub port: u16,
    /// `srv_admin_state` bits.
    pub admin: u32,
    /// `srv_uweight`, the weight set by config or `set server weight`.
    pub weight: u32,
}

impl LiveServer {
    fn in_maintenance(&self) -> bool {
        self.admin & ADMIN_FORCED_MAINT != 0
    }
}

/// A connection-per-command client of an HAProxy CLI socket, bounded by one deadline.
pub struct RuntimeClient<'a> {
    socket: &'a RuntimeSocket,
    timeout: Duration,
    deadline: Instant,
}

impl<'a> RuntimeClient<'a> {
    /// A client whose commands must all finish within `timeout` from now.
    pub fn new(socket: &'a RuntimeSocket, timeout: Duration) -> Self {
        RuntimeClient {
            socket,
            timeout,
            deadline: Instant::now() + timeout,
        }
    }

    /// Sends one command and returns HAProxy's whole answer.
    pub async fn send(&self, command: &str) -> Result<String, RuntimeError> {
        let timed_out = || RuntimeError::Timeout {
            socket: self.socket.clone(),
            command: command.to_string(),
            timeout: self.timeout,
        };
        tokio::time::timeout_at(self.deadline, self.exchange(command))
            .await
            .map_err(|_| timed_out())?
    }

    async fn exchange(&self, command: &str) -> Result<String, RuntimeError> {
        let connect_err = |source| RuntimeError::Connect {
            socket: self.socket.clone(),
            source,
        };
        match self.socket {
            RuntimeSocket::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(connect_err)?;
                self.talk(stream, command).await
            }
            RuntimeSocket::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(connect_err)?;
                self.talk(stream, command).await
            }
        }
    }

    // Without `prompt`, HAProxy runs one command and closes the connection: the answer is
    // everything up to EOF.
    async fn talk<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        command: &str,
    ) -> Result<String, RuntimeError> {
        let io_err = |source| RuntimeError::Io {
            socket: self.socket.clone(),
            command: command.to_string(),
            source,
        };
        stream
            .write_all(format!("{command}\n").as_bytes())
            .await
            .map_err(io_err)?;
        let mut answer = Vec::new();
        (&mut stream)
            .take(MAX_ANSWER as u64)
            .read_to_end(&mut answer)
            .await
            .map_err(io_err)?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }

    /// The live servers of one backend.
    pub async fn servers_state(&self, backend: &str) -> Result<Vec<LiveServer>, RuntimeError> {
        let command = format!("show servers state {backend}");
        let answer = self.send(&command).await?;
        parse_servers_state(&answer).ok_or_else(|| RuntimeError::Refused {
            socket: self.socket.clone(),
            command,
            answer,
        })
    }

    /// Sends a `set server` command and checks HAProxy's answer.
    async fn set(&self, command: &str) -> Result<(), RuntimeError> {
        let answer = self.send(command).await?;
        let text = answer.trim();
        // `set server ... addr` reports what it did; `weight` and `state` answer nothing.
        let ok = if command.contains(" addr ") {
            text.starts_with("IP changed from") || text.starts_with("no need to change the addr")
        } else {
            text.is_empty()
        };
        if ok {
            Ok(())
        } else {
            Err(RuntimeError::Refused {
                socket: self.socket.clone(),
                command: command.to_string(),
                answer,
            })
        }
    }
}

/// Parses `show servers state` (format 1): a version line, a `#` header naming the columns,
/// then one line per server. `None` when the answer is not that (an error message).
pub fn parse_servers_state(answer: &str) -> Option<Vec<LiveServer>> {
    let mut lines = answer.lines();
    if lines.next()?.trim() != "1" {
        return None;
    }
    let header: Vec<&str> = lines
        .next()?
        .trim_start_matches('#')
        .split_whitespace()
        .collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (name, addr, admin, weight, port) = (
        col("srv_name")?,
        col("srv_addr")?,
        col("srv_admin_state")?,
        col("srv_uweight")?,
        col("srv_port")?,
    );
    let mut servers = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        servers.push(LiveServer {
            name: fields.get(name)?.to_string(),
            address: fields.get(addr)?.to_string(),
            port: fields.get(port)?.parse().ok()?,
            admin: fields.get(admin)?.parse().ok()?,
            weight: fields.get(weight)?.parse().ok()?,
        });
    }
    Some(servers)
}

/// Why the change is not made in place (logged; the fallback reload runs).
#[derive(Debug)]
enum NotInPlace {
    Owed,
    NewFile(PathBuf),
    SlotsExhausted {
        path: PathBuf,
        backend: String,
        running: usize,
        needed: usize,
    },
    Layout(PathBuf),
    HostName {
        backend: String,
        server: String,
        address: String,
    },
    UnsafeName(String),
    Runtime(RuntimeError),
}

impl fmt::Display for NotInPlace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotInPlace::Owed => f.write_str("a reload is owed from an earlier pass"),
            NotInPlace::NewFile(path) => write!(
                f,
                "{} is new, so the running HAProxy has not loaded it",
                path.display()
            ),
            NotInPlace::SlotsExhausted {
                path,
                backend,
                running,
                needed,
            } => write!(
                f,
                "slots exhausted: backend `{backend}` in {} now has {needed} servers, the running \
                 HAProxy has {running}",
                path.display()
            ),
            NotInPlace::Layout(path) => write!(
                f,
                "{} changed beyond server addresses, ports, weights and states",
                path.display()
            ),
            NotInPlace::HostName {
                backend,
                server,
                address,
            } => write!(
                f,
                "server `{backend}/{server}` has the host name `{address}`, which the Runtime API \
                 cannot set"
            ),
            NotInPlace::UnsafeName(name) => write!(
                f,
                "`{name}` is not a name to put in a Runtime API command (letters, digits, `_`, \
                 `-`, `.` and `:` only)"
            ),
            NotInPlace::Runtime(e) => write!(f, "the Runtime API update failed: {e}"),
        }
    }
}

/// What the runtime action did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeOutcome {
    /// The servers were updated in place with these commands (none when already equal).
    InPlace(Vec<String>),
    /// The fallback reload ran, for this reason.
    Reloaded(String),
}

/// Runs the `haproxy_runtime` action for one frontend.
pub async fn reload(
    name: &str,
    action: &HaproxyRuntime,
    cwd: &Path,
    context: &ReloadContext<'_>,
) -> Result<RuntimeOutcome, FrontendError> {
    let reason = match in_place_update(action, context).await {
        Ok(commands) => {
            if commands.is_empty() {
                tracing::info!("frontend `{name}`: live servers already match the files");
            } else {
                tracing::info!(
                    "frontend `{name}`: updated in place through {} ({} commands, no reload): {}",
                    action.socket,
                    commands.len(),
                    commands.join("; ")
                );
            }
            return Ok(RuntimeOutcome::InPlace(commands));
        }
        Err(reason) => reason,
    };
    tracing::warn!("frontend `{name}`: {reason}; reloading with the fallback");
    match Box::pin(super::reload(name, &action.fallback, cwd, context)).await {
        Ok(_) => Ok(RuntimeOutcome::Reloaded(reason.to_string())),
        Err(source) => Err(FrontendError::RuntimeFallback {
            frontend: name.to_string(),
            reason: reason.to_string(),
            source: Box::new(source),
        }),
    }
}

async fn in_place_update(
    action: &HaproxyRuntime,
    context: &ReloadContext<'_>,
) -> Result<Vec<String>, NotInPlace> {
    if context.owed {
        return Err(NotInPlace::Owed);
    }
    let mut desired: Vec<BackendSection> = Vec::new();
    for file in &context.changed {
        desired.extend(changed_servers(file)?);
    }
    let client = RuntimeClient::new(&action.socket, action.timeout);
    let mut sent = Vec::new();
    let mut plans = Vec::new();
    for backend in &desired {
        let live = client
            .servers_state(&backend.name)
            .await
            .map_err(NotInPlace::Runtime)?;
        plans.push(plan(&action.socket, backend, &live)?);
    }
    // New and changed servers first, then the ones going into maintenance, so that capacity
    // is added before it is taken away.
    let (ups, downs): (Vec<_>, Vec<_>) = plans.into_iter().flatten().partition(|s| s.up);
    for step in ups.into_iter().chain(downs) {
        for command in step.commands {
            client.set(&command).await.map_err(NotInPlace::Runtime)?;
            sent.push(command);
        }
    }
    // Read back: what HAProxy runs must now be what the file says.
    for backend in &desired {
        let live = client
            .servers_state(&backend.name)
            .await
            .map_err(NotInPlace::Runtime)?;
        let pending: Vec<String> = plan(&action.socket, backend, &live)?
            .into_iter()
            .flat_map(|s| s.commands)
            .collect();
        if !pending.is_empty() {
            return Err(NotInPlace::Runtime(RuntimeError::NotConverged {
                socket: action.socket.clone(),
                backend: backend.name.clone(),
                pending: pending.join("; "),
            }));
        }
    }
    Ok(sent)
}

/// The backends of a changed file, when the change is one `set server` can make.
fn changed_servers(file: &ChangedFile<'_>) -> Result<Vec<BackendSection>, NotInPlace> {
    let Some(previous) = file.previous else {
        return Err(NotInPlace::NewFile(file.path.to_path_buf()));
    };
    let old = haproxy_file::parse(&String::from_utf8_lossy(previous));
    let new = haproxy_file::parse(file.content);
    if old.skeleton != new.skeleton {
        for backend in &new.backends {
            let running = old.backend(&backend.name).map_or(0, |b| b.servers.len());
            if running > 0 && backend.servers.len() > running {
                return Err(NotInPlace::SlotsExhausted {
                    path: file.path.to_path_buf(),
                    backend: backend.name.clone(),
                    running,
                    needed: backend.servers.len(),
                });
            }
        }
        return Err(NotInPlace::Layout(file.path.to_path_buf()));
    }
    // Names go into CLI commands, where `;` separates commands and spaces separate words; the
    // built-in templates never write such names, a custom template might.
    let safe = |name: &str| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
    };
    for backend in &new.backends {
        let names = std::iter::once(&backend.name).chain(backend.servers.iter().map(|s| &s.name));
        if let Some(bad) = names.into_iter().find(|n| !safe(n)) {
            return Err(NotInPlace::UnsafeName(bad.clone()));
        }
    }
    Ok(new.backends)
}

/// The commands for one server, and whether they add capacity.
#[derive(Debug, PartialEq, Eq)]
struct Step {
    up: bool,
    commands: Vec<String>,
}

/// What to send so that the live servers of `backend` match the file.
fn plan(
    socket: &RuntimeSocket,
    backend: &BackendSection,
    live: &[LiveServer],
) -> Result<Vec<Step>, NotInPlace> {
    let mut steps = Vec::new();
    for server in &backend.servers {
        let Some(now) = live.iter().find(|l| l.name == server.name) else {
            return Err(NotInPlace::Runtime(RuntimeError::MissingServer {
                socket: socket.clone(),
                backend: backend.name.clone(),
                server: server.name.clone(),
            }));
        };
        let step = plan_server(&backend.name, server, now)?;
        if !step.commands.is_empty() {
            steps.push(step);
        }
    }
    Ok(steps)
}

fn plan_server(backend: &str, server: &ServerLine, now: &LiveServer) -> Result<Step, NotInPlace> {
    let target = format!("{backend}/{}", server.name);
    let ip = server.ip();
    let moved = ip != now.address.parse::<IpAddr>().ok() || server.port != now.port;
    let set_addr = |ip: IpAddr| format!("set server {target} addr {ip} port {}", server.port);
    let mut commands = Vec::new();
    if server.disabled {
        if !now.in_maintenance() {
            commands.push(format!("set server {target} state maint"));
        }
        // Free slots go back to the placeholder address, so that the live state is the file's.
        if let (true, Some(ip)) = (moved, ip) {
            commands.push(set_addr(ip));
        }
        if server.weight != now.weight {
            commands.push(format!("set server {target} weight {}", server.weight));
        }
        return Ok(Step {
            up: false,
            commands,
        });
    }
    let Some(ip) = ip else {
        return Err(NotInPlace::HostName {
            backend: backend.to_string(),
            server: server.name.clone(),
            address: server.address.clone(),
        });
    };
    if moved {
        // A slot taking another backend stops serving before its address changes, so no
        // request goes to a half-updated server.
        if !now.in_maintenance() {
            commands.push(format!("set server {target} state maint"));
        }
        commands.push(set_addr(ip));
    }
    if server.weight != now.weight {
        commands.push(format!("set server {target} weight {}", server.weight));
    }
    if moved || now.in_maintenance() || now.admin & ADMIN_FORCED_DRAIN != 0 {
        commands.push(format!("set server {target} state ready"));
    }
    Ok(Step { up: true, commands })
}

/// Asks the master process to reload (`reload` on the master CLI, `-S` or
/// `stats socket ... master` ... `master-worker`): it re-executes and starts new workers
/// from the files on disk; old workers finish their connections.
pub async fn master_reload(socket: &RuntimeSocket, timeout: Duration) -> Result<(), RuntimeError> {
    let client = RuntimeClient::new(socket, timeout);
    let answer = client.send("reload").await?;
    // HAProxy 2.6 closes the connection without a word; later versions report the outcome.
    let text = answer.trim();
    if text.is_empty() || text.contains("Success=1") {
        Ok(())
    } else {
        Err(RuntimeError::Refused {
            socket: socket.clone(),
            command: "reload".into(),
            answer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n\
        3 web 1 web_s1 127.0.0.2 2 0 1 1 1 8 2 0 6 0 0 0 - 8080 - 0 0 - - 0\n\
        3 web 2 web_s2 0.0.0.0 0 5 1 1 1 1 0 0 14 0 0 0 - 0 - 0 0 - - 0\n\n";

    fn socket() -> RuntimeSocket {
        RuntimeSocket::Unix("/run/haproxy/admin.sock".into())
    }

    #[test]
    fn servers_state_is_read_by_column_name() {
        let live = parse_servers_state(STATE).unwrap();
        assert_eq!(
            live[1],
            LiveServer {
                name: "web_s2".into(),
                address: "0.0.0.0".into(),
                port: 0,
                admin: 5,
                weight: 1
            }
        );
        assert!(parse_servers_state("Can't find backend.\n").is_none());
    }

    fn commands(file: &str) -> Result<Vec<String>, String> {
        let section = haproxy_file::parse(file).backends.remove(0);
        let live = parse_servers_state(STATE).unwrap();
        plan(&socket(), &section, &live)
            .map(|steps| steps.into_iter().flat_map(|s| s.commands).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn plans_fill_move_empty_and_reweigh_slots() {
        assert_eq!(
            commands(
                "backend web\n server web_s1 127.0.0.2:8080 weight 1\n server web_s2 0.0.0.0:0 disabled\n"
            ),
            Ok(vec![])
        );
        insta::assert_debug_snapshot!(commands(
            "backend web\n server web_s1 127.0.0.3:8080 weight 4\n server web_s2 [::1]:81 weight 2\n"
        ));
        insta::assert_debug_snapshot!(commands(
            "backend web\n server web_s1 0.0.0.0:0 disabled\n server web_s2 0.0.0.0:0 disabled\n"
        ));
    }

    #[test]
    fn plan_errors_name_the_server() {
        insta::assert_snapshot!(
            commands(
                "backend web\n server web_s1 app.internal:80\n server web_s2 0.0.0.0:0 disabled\n"
            )
            .unwrap_err()
        );
        insta::assert_snapshot!(
            commands("backend web\n server web_s9 127.0.0.1:80\n").unwrap_err()
        );
    }

    #[test]
    fn only_address_weight_and_state_changes_are_made_in_place() {
        let old = "backend web\n server web_s1 127.0.0.2:80\n server web_s2 0.0.0.0:0 disabled\n";
        let check = |new: &str, previous: Option<&str>| {
            changed_servers(&ChangedFile {
                path: Path::new("/etc/haproxy/web.cfg"),
                previous: previous.map(str::as_bytes),
                content: new,
            })
            .map(|b| b.len())
            .map_err(|e| e.to_string())
        };
        let moved = old.replace("127.0.0.2:80", "127.0.0.3:81 weight 5");
        assert_eq!(check(&moved, Some(old)), Ok(1));
        insta::assert_snapshot!(
            [
                check(old, None).unwrap_err(),
                check(
                    &format!("{old} server web_s3 0.0.0.0:0 disabled\n"),
                    Some(old)
                )
                .unwrap_err(),
                check(
                    &old.replace("backend web", "backend web\n balance first"),
                    Some(old)
                )
                .unwrap_err(),
                check(
                    &old.replace("web_s", "web;s"),
                    Some(&old.replace("web_s", "web;s"))
                )
                .unwrap_err(),
            ]
            .join("\n")
        );
    }

    #[test]
    fn sockets_parse_as_paths_or_tcp_addresses() {
        assert_eq!(
            RuntimeSocket::parse("/run/haproxy/admin.sock").unwrap(),
            RuntimeSocket::Unix("/run/haproxy/admin.sock".into())
        );
        assert_eq!(
            RuntimeSocket::parse("127.0.0.1:9999").unwrap(),
            RuntimeSocket::Tcp("127.0.0.1:9999".into())
        );
        assert_eq!(
            RuntimeSocket::parse("[::1]:9999").unwrap(),
            RuntimeSocket::Tcp("[::1]:9999".into())
        );
        assert_eq!(
            RuntimeSocket::parse("unix@run/a:1").unwrap(),
            RuntimeSocket::Unix("run/a:1".into())
        );
        assert!(RuntimeSocket::parse(" ").is_err());
    }

    #[tokio::test]
    async fn an_unreachable_socket_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let socket = RuntimeSocket::Unix(dir.path().join("nope.sock"));
        let err = RuntimeClient::new(&socket, Duration::from_secs(1))
            .send("show info")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nope.sock") && err.contains("cannot connect"),
            "{err}"
        );
    }
}
