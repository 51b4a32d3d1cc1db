//! Accepting connections: TCP (plain or TLS) and Unix listeners, each connection served by hyper
//! with a cap on connections at once, a deadline for each request head (which also ends idle
//! kept-alive connections and slowloris clients), for the TLS handshake, for each answer, and
//! for each write (a client that stops reading).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::timed::TimedWrites;
use super::{ServerConfig, ServerError};

/// The TLS acceptor of the TCP listeners, swapped in place on SIGHUP; `None` is plain HTTP.
pub(crate) type TlsSlot = Arc<RwLock<Option<TlsAcceptor>>>;

/// The running accept loops; dropping them stops accepting, closes the open connections and
/// removes the Unix socket file.
pub(crate) struct Listeners {
    tasks: JoinSet<()>,
    addrs: Vec<SocketAddr>,
    socket: Option<SocketFile>,
    /// Dropped to tell every open connection to close.
    _stop: watch::Sender<()>,
}

impl Listeners {
    pub(crate) async fn bind(
        config: &ServerConfig,
        router: Router,
        tls: TlsSlot,
    ) -> Result<Self, ServerError> {
        let (stop, stopped) = watch::channel(());
        let limits = Limits {
            connections: Arc::new(Semaphore::new(config.max_connections.max(1))),
            request_timeout: config.request_timeout.0,
            stopped,
        };
        let mut tasks = JoinSet::new();
        let mut addrs = Vec::new();
        let secure = tls.read().is_ok_and(|t| t.is_some());
        for addr in config.tcp_addresses() {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })?;
            let local = listener.local_addr().unwrap_or(addr);
            addrs.push(local);
            let scheme = if secure { "https" } else { "http" };
            tracing::info!("server listening on {scheme}://{local}");
            if let Some(warning) = exposure(local, secure) {
                tracing::warn!("{warning}");
            }
            let (router, limits, tls) = (router.clone(), limits.clone(), Arc::clone(&tls));
            tasks.spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => {
                            let acceptor = tls.read().ok().and_then(|t| t.clone());
                            limits.serve_tcp(stream, acceptor, router.clone());
                        }
                        Err(e) => accept_failed(e).await,
                    }
                }
            });
        }
        let mut socket_file = None;
        if let Some(socket) = &config.socket {
            let path = socket.path.clone();
            let fail = |source| ServerError::Socket {
                path: path.clone(),
                source,
            };
            remove_stale_socket(&path).map_err(fail)?;
            let listener = bind_socket(&path, socket.mode.0).map_err(fail)?;
            socket_file = Some(SocketFile::new(path.clone()).map_err(fail)?);
            tracing::info!("server listening on unix:{}", path.display());
            let (router, limits) = (router.clone(), limits.clone());
            tasks.spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => limits.serve(stream, router.clone()),
                        Err(e) => accept_failed(e).await,
                    }
                }
            });
        }
        Ok(Listeners {
            tasks,
            addrs,
            socket: socket_file,
            _stop: stop,
        })
    }

    pub(crate) fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }

    /// Stops accepting and waits until the listening sockets are closed, so that the same
    /// addresses can be bound again at once; removes the socket file.
    pub(crate) async fn stop(mut self) {
        self.tasks.shutdown().await;
        self.socket.take();
    }
}

/// The warning for a listener other hosts can reach: the read-only endpoints answer anyone.
fn exposure(local: SocketAddr, secure: bool) -> Option<String> {
    (!local.ip().is_loopback()).then(|| {
        format!(
            "server: {local} is reachable from other hosts{}; the read-only endpoints need no \
             token (listen on 127.0.0.1 or a socket unless that is meant)",
            if secure {
                ""
            } else {
                ", and not encrypted (no server.tls)"
            }
        )
    })
}

/// The socket file this server created, removed when the server stops unless something else
/// has replaced it meanwhile (another instance that took the path over).
struct SocketFile {
    path: PathBuf,
    id: (u64, u64),
}

impl SocketFile {
    fn new(path: PathBuf) -> std::io::Result<Self> {
        let id = file_id(&path)?;
        Ok(SocketFile { path, id })
    }
}

fn file_id(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if file_id(&self.path).is_ok_and(|id| id == self.id)
            && let Err(e) = std::fs::remove_file(&self.path)
        {
            tracing::warn!("server: cannot remove socket {}: {e}", self.path.display());
        }
    }
}

/// Binds the socket in a private directory beside `path`, gives it `mode` and only then links it
/// into place (the private directory goes), so that nobody can connect while it still has the umask's permissions.
fn bind_socket(path: &Path, mode: u32) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // tempfile creates the directory with mode 0700.
    let private = tempfile::Builder::new()
        .prefix(".elasticd-socket-")
        .tempdir_in(parent)?;
    let staged = private.path().join("s");
    let listener = UnixListener::bind(&staged)?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))?;
    // A link, unlike a rename, never replaces a file that appeared there meanwhile.
    std::fs::hard_link(&staged, path)?;
    Ok(listener)
}

/// A socket file left by a process that is gone is replaced; a socket someone still listens on,
/// or any other kind of file, is left alone and the server does not start.
fn remove_stale_socket(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another process is listening on it",
                ));
            }
            std::fs::remove_file(path)
        }
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "a file that is not a socket is in the way; remove it or choose another path",
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Out of file descriptors, say: wait a little instead of spinning.
async fn accept_failed(e: std::io::Error) {
    tracing::warn!("server: accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[derive(Clone)]
struct Limits {
    connections: Arc<Semaphore>,
    request_timeout: Duration,
    stopped: watch::Receiver<()>,
}

impl Limits {
    fn serve_tcp(&self, stream: tokio::net::TcpStream, tls: Option<TlsAcceptor>, router: Router) {
        let Some(acceptor) = tls else {
            return self.serve(stream, router);
        };
        let Ok(permit) = Arc::clone(&self.connections).try_acquire_owned() else {
            return;
        };
        let this = self.clone();
        let stream = TimedWrites::new(stream, self.request_timeout);
        tokio::spawn(async move {
            // A client that never finishes the handshake (plain HTTP on the TLS port ends it at
            // once) is dropped like one that never sends its request head.
            match tokio::time::timeout(this.request_timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => this.connection(stream, router).await,
                Ok(Err(e)) => tracing::debug!("server: TLS handshake failed: {e}"),
                Err(_) => tracing::debug!("server: TLS handshake timed out"),
            }
            drop(permit);
        });
    }

    fn serve<S>(&self, stream: S, router: Router)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
    {
        // Over the cap the connection is closed at once: it costs nothing to keep out.
        let Ok(permit) = Arc::clone(&self.connections).try_acquire_owned() else {
            return;
        };
        let this = self.clone();
        let stream = TimedWrites::new(stream, self.request_timeout);
        tokio::spawn(async move {
            this.connection(stream, router).await;
            drop(permit);
        });
    }

    async fn connection<S>(&self, stream: S, router: Router)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let timeout = self.request_timeout;
        let service = hyper::service::service_fn(move |request| {
            let router = router.clone();
            async move {
                use tower::ServiceExt;
                match tokio::time::timeout(timeout, router.oneshot(request)).await {
                    Ok(response) => response,
                    Err(_) => Ok(super::routes::timed_out()),
                }
            }
        });
        // The head deadline runs from the moment hyper waits for a request, so an idle
        // kept-alive connection and a client trickling its head a byte at a time are both
        // closed after `request_timeout`.
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(timeout)
            .max_buf_size(64 * 1024)
            .serve_connection(TokioIo::new(stream), service)
            // WebSockets (connection-bound registrations) take the connection over.
            .with_upgrades();
        let mut stopped = self.stopped.clone();
        tokio::select! {
            _ = connection => {}
            _ = stopped.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn only_listeners_off_loopback_are_warned_about() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(exposure(at("127.0.0.1:9797"), false), None);
        assert_eq!(exposure(at("[::1]:9797"), false), None);
        let plain = exposure(at("0.0.0.0:9797"), false).unwrap();
        assert!(plain.contains("not encrypted"), "{plain}");
        let tls = exposure(at("[::]:9797"), true).unwrap();
        assert!(!tls.contains("not encrypted"), "{tls}");
    }

    #[tokio::test]
    async fn a_slow_answer_is_cut_off_at_request_timeout() {
        let config: ServerConfig = serde_json::from_value(serde_json::json!({
            "listen": ["127.0.0.1:0"],
            "request_timeout": "1s",
        }))
        .unwrap();
        let router = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        );
        let listeners = Listeners::bind(&config, router, TlsSlot::default())
            .await
            .unwrap();
        let mut stream = tokio::net::TcpStream::connect(listeners.local_addrs()[0])
            .await
            .unwrap();
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        let read = stream.read_to_string(&mut answer);
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("an answer before the handler ends")
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("took too long"), "{answer}");
    }
}
