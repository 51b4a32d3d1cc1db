//! The operations server (`server:`): health and readiness, the JSON API under `/api/v1`,
//! Prometheus metrics, the status page, and the token-protected refresh trigger.
//!
//! It runs on its own thread (a tokio runtime of its own) and reads the [`Status`] the daemon
//! publishes after every event, so it answers while a pass renders or a locator parses, and a
//! slow client can never hold the event loop. Requests that change something reach the daemon
//! as [`Command`]s through a bounded channel.

mod listen;
mod page;
mod registry;
mod routes;
mod timed;
mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{mpsc, watch};

use crate::secret::Secret;
use crate::status::Status;
use crate::value::{FileMode, HumanDuration};

/// Where the server listens when `server:` names neither `listen` nor `socket`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9797";

/// The `server:` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// TCP addresses to listen on (`127.0.0.1:9797`); loopback unless told otherwise.
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// A Unix socket to listen on, so that instances on one host never fight over ports.
    #[serde(default)]
    pub socket: Option<SocketConfig>,
    /// A file holding the bearer token that mutating endpoints require; without it they are off.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// HTTPS instead of HTTP on the TCP listeners; the files are read again on SIGHUP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Connections served at once; more are closed as soon as they are accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// The longest a request head may take to arrive (also how long an idle kept-alive
    /// connection stays open) and the longest an answer may take.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: HumanDuration,
    /// The largest request body accepted, in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

/// A Unix socket listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketConfig {
    /// Its path; a stale socket file there is replaced.
    pub path: PathBuf,
    /// Its permissions (default `0660`: the owner and its group).
    #[serde(default = "default_socket_mode")]
    pub mode: FileMode,
}

/// `tls:` of the server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

fn default_max_connections() -> usize {
    1024
}

fn default_request_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

fn default_max_body_bytes() -> usize {
    64 * 1024
}

fn default_socket_mode() -> FileMode {
    FileMode(0o660)
}

impl ServerConfig {
    /// The TCP addresses to bind: `listen`, or [`DEFAULT_LISTEN`] when no listener is named.
    pub fn tcp_addresses(&self) -> Vec<SocketAddr> {
        if self.listen.is_empty() && self.socket.is_none() {
            DEFAULT_LISTEN.parse().into_iter().collect()
        } else {
            self.listen.clone()
        }
    }

    /// Makes relative paths relative to the config's directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(socket) = &mut self.socket {
            socket.path = base.join(&socket.path);
        }
        if let Some(token) = &mut self.token_file {
            *token = base.join(&*token);
        }
        if let Some(tls) = &mut self.tls {
            tls.cert_file = base.join(&tls.cert_file);
            tls.key_file = base.join(&tls.key_file);
        }
    }
}

/// What a client asked the daemon to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Locate these services now (all when `None`); the answers go through the settle window.
    Refresh(Option<String>),
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A TCP address could not be bound.
    #[error("server: cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The Unix socket could not be created.
    #[error("server: cannot listen on socket {}: {source}", path.display())]
    Socket {
        /// The socket's path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The token file could not be used.
    #[error("server: token_file {}: {reason}", path.display())]
    Token {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The server's threads could not be started.
    #[error("server: cannot start its threads: {reason}")]
    Runtime {
        /// Why.
        reason: String,
    },
    /// The TLS certificate or key could not be used.
    #[error("server: tls: {}: {reason}", path.display())]
    Tls {
        /// The file at fault.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Reads the bearer token of `token_file`.
pub fn read_token(path: &Path) -> Result<Secret, ServerError> {
    Secret::read(path).map_err(|e| ServerError::Token {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// What the request handlers share.
pub(crate) struct Shared {
    status: watch::Receiver<Arc<Status>>,
    commands: mpsc::Sender<Command>,
    token: Mutex<Option<Secret>>,
    /// When each refresh target (`None`: all) was last asked for, for the rate limit.
    last_refresh: Mutex<std::collections::HashMap<Option<String>, tokio::time::Instant>>,
}

/// A running server; dropping it stops every listener and removes its socket file.
pub struct Server {
    shared: Arc<Shared>,
    config: ServerConfig,
    tls: listen::TlsSlot,
    listeners: Option<listen::Listeners>,
    /// Where the listeners and every connection run; never the daemon's own thread.
    thread: Option<ServerThread>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Listeners first (their accept loops are aborted, the socket file removed), then the
        // thread, which drops what is left of the connections.
        self.listeners.take();
        self.thread.take();
    }
}

/// The server's own thread, running a tokio runtime of its own: requests never wait for the
/// daemon's loop (a render, a locate), and a flood of requests never delays a pass.
struct ServerThread {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    fn start() -> Result<Self, ServerError> {
        let fail = |e: std::io::Error| ServerError::Runtime {
            reason: e.to_string(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(fail)?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("elasticd-server".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                // Connections still open are dropped with the runtime, here.
                drop(runtime);
            })
            .map_err(fail)?;
        Ok(ServerThread {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Binds `config`'s listeners on this thread, so that they and their connections run here.
    async fn bind(
        &self,
        config: &ServerConfig,
        router: axum::Router,
        tls: listen::TlsSlot,
    ) -> Result<listen::Listeners, ServerError> {
        let config = config.clone();
        self.handle
            .spawn(async move { listen::Listeners::bind(&config, router, tls).await })
            .await
            .map_err(|e| ServerError::Runtime {
                reason: e.to_string(),
            })?
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Brief: every task there is async, and dropping them closes their sockets.
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Whether the listeners must be bound again to apply `new` (token and TLS files are swapped in
/// place, keeping open connections).
fn rebind_needed(old: &ServerConfig, new: &ServerConfig) -> bool {
    old.listen != new.listen
        || old.socket != new.socket
        || old.max_connections != new.max_connections
        || old.request_timeout != new.request_timeout
        || old.max_body_bytes != new.max_body_bytes
}

impl Server {
    /// Reads the token and TLS files, binds every listener of `config` and starts serving
    /// `status`; commands go to `commands`.
    pub async fn start(
        config: &ServerConfig,
        status: watch::Receiver<Arc<Status>>,
        commands: mpsc::Sender<Command>,
    ) -> Result<Self, ServerError> {
        let token = config.token_file.as_deref().map(read_token).transpose()?;
        let tls: listen::TlsSlot = Arc::new(RwLock::new(
            config.tls.as_ref().map(TlsConfig::load).transpose()?,
        ));
        let shared = Arc::new(Shared {
            status,
            commands,
            token: Mutex::new(token),
            last_refresh: Mutex::new(Default::default()),
        });
        let router = routes::router(Arc::clone(&shared), config.max_body_bytes);
        let thread = ServerThread::start()?;
        let listeners = thread.bind(config, router, Arc::clone(&tls)).await?;
        Ok(Server {
            shared,
            config: config.clone(),
            tls,
            listeners: Some(listeners),
            thread: Some(thread),
        })
    }

    /// The addresses actually bound (a port of 0 becomes the one the kernel chose).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .as_ref()
            .map(listen::Listeners::local_addrs)
            .unwrap_or_default()
    }

    /// Applies a new `server:` section (SIGHUP): the token and TLS files are read again, and the
    /// listeners are bound again if their settings changed. On error the running server is left
    /// as it was, old token and certificate included.
    pub async fn reconfigure(mut self, config: &ServerConfig) -> Result<Self, (Self, ServerError)> {
        if self.thread.is_none() {
            match ServerThread::start() {
                Ok(t) => self.thread = Some(t),
                Err(e) => return Err((self, e)),
            }
        }
        let token = match config.token_file.as_deref().map(read_token).transpose() {
            Ok(t) => t,
            Err(e) => return Err((self, e)),
        };
        let tls = match config.tls.as_ref().map(TlsConfig::load).transpose() {
            Ok(t) => t,
            Err(e) => return Err((self, e)),
        };
        if rebind_needed(&self.config, config) || self.listeners.is_none() {
            let router = routes::router(Arc::clone(&self.shared), config.max_body_bytes);
            let slot: listen::TlsSlot = Arc::new(RwLock::new(tls));
            // The old listeners go first so that the same addresses can be bound again.
            if let Some(old) = self.listeners.take() {
                old.stop().await;
            }
            let bound = match &self.thread {
                Some(thread) => thread.bind(config, router, Arc::clone(&slot)).await,
                None => Err(ServerError::Runtime {
                    reason: "it stopped".into(),
                }),
            };
            match bound {
                Ok(l) => {
                    self.listeners = Some(l);
                    self.tls = slot;
                }
                Err(e) => {
                    // Put the old ones back; if even that fails the daemon goes on without
                    // listeners until the next SIGHUP.
                    let router =
                        routes::router(Arc::clone(&self.shared), self.config.max_body_bytes);
                    let again = match &self.thread {
                        Some(thread) => {
                            thread
                                .bind(&self.config, router, Arc::clone(&self.tls))
                                .await
                        }
                        None => Err(ServerError::Runtime {
                            reason: "it stopped".into(),
                        }),
                    };
                    match again {
                        Ok(l) => self.listeners = Some(l),
                        Err(again) => tracing::error!("{again}"),
                    }
                    return Err((self, e));
                }
            }
        } else if let Ok(mut slot) = self.tls.write() {
            *slot = tls;
        }
        if let Some(tls) = &config.tls {
            tracing::info!(
                "server: TLS certificate loaded from {}",
                tls.cert_file.display()
            );
        }
        if let Ok(mut slot) = self.shared.token.lock() {
            *slot = token;
        }
        self.config = config.clone();
        Ok(self)
    }

    /// Stops every listener and waits until their sockets are closed. Connections already
    /// open (a connection-bound registration's WebSocket) live on until the server is dropped,
    /// so that the daemon can save registrations first.
    pub async fn close_listeners(&mut self) {
        if let Some(listeners) = self.listeners.take() {
            listeners.stop().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "\n").unwrap();
        let e = read_token(&path).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "server: token_file {}: is empty; it must hold the token on its first line",
                path.display()
            )
        );
    }

    #[test]
    fn only_listener_settings_need_a_rebind() {
        let base: ServerConfig = serde_json::from_value(serde_json::json!({})).unwrap();
        let mut files = base.clone();
        files.token_file = Some("t".into());
        files.tls = Some(TlsConfig {
            cert_file: "c".into(),
            key_file: "k".into(),
        });
        assert!(!rebind_needed(&base, &files));
        let mut port = base.clone();
        port.listen = vec!["127.0.0.1:1".parse().unwrap()];
        assert!(rebind_needed(&base, &port));
    }
}
