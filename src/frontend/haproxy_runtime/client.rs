//! The HAProxy CLI protocol: one command a connection, on the stats socket (the Runtime API)
//! or the master socket, all under one deadline; and reading `show servers state`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

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

    /// Resolves a relative Unix socket path against the config directory.
    pub(in crate::frontend) fn resolve_paths(&mut self, base: &Path) {
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
    /// In forced maintenance (`disabled`, `state maint`).
    pub(super) fn in_maintenance(&self) -> bool {
        self.admin & ADMIN_FORCED_MAINT != 0
    }

    /// In forced drain (`state drain`).
    pub(super) fn draining(&self) -> bool {
        self.admin & ADMIN_FORCED_DRAIN != 0
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
    pub(super) async fn set(&self, command: &str) -> Result<(), RuntimeError> {
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
