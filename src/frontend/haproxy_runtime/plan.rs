//! The plan: from the old and new file, whether the change can be made with `set server`, and
//! the commands that make the live servers match the new file.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use super::client::{LiveServer, RuntimeError, RuntimeSocket};
use crate::frontend::ChangedFile;
use crate::frontend::haproxy_file::{self, BackendSection, ServerLine};

/// Why the change is not made in place (logged; the fallback reload runs).
#[derive(Debug)]
pub(super) enum NotInPlace {
    Owed,
    NewFile(PathBuf),
    SlotsExhausted {
        path: PathBuf,
        backend: String,
        running: usize,
        needed: usize,
    },
    FirstSlots {
        path: PathBuf,
        backend: String,
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
            NotInPlace::FirstSlots { path, backend } => write!(
                f,
                "first switch to slots: backend `{backend}` in {} had no slots before, so a \
                 reload is needed once",
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

/// The backends of a changed file, when the change is one `set server` can make.
pub(super) fn changed_servers(file: &ChangedFile<'_>) -> Result<Vec<BackendSection>, NotInPlace> {
    let Some(previous) = file.previous else {
        return Err(NotInPlace::NewFile(file.path.to_path_buf()));
    };
    let old = haproxy_file::parse(&String::from_utf8_lossy(previous));
    let new = haproxy_file::parse(file.content);
    if old.skeleton != new.skeleton {
        for backend in &new.backends {
            let running = old.backend(&backend.name).map_or(0, |b| b.servers.len());
            if running > 0 && backend.servers.len() > running {
                // Slots grow by appending: the running servers keep their names, in order. Any
                // other names mean the installed file had no slots (or other ones) yet.
                let grown = old.backend(&backend.name).is_some_and(|b| {
                    b.servers
                        .iter()
                        .zip(&backend.servers)
                        .all(|(o, n)| o.name == n.name)
                });
                if !grown {
                    return Err(NotInPlace::FirstSlots {
                        path: file.path.to_path_buf(),
                        backend: backend.name.clone(),
                    });
                }
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
pub(super) struct Step {
    /// The commands add capacity, so they go before those that take it away.
    pub(super) up: bool,
    /// The `set server` commands, in order.
    pub(super) commands: Vec<String>,
}

/// What to send so that the live servers of `backend` match the file.
pub(super) fn plan(
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
    if moved || now.in_maintenance() || now.draining() {
        commands.push(format!("set server {target} state ready"));
    }
    Ok(Step { up: true, commands })
}
