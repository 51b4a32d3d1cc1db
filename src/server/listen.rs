//! Accepting connections: TCP and Unix listeners, each connection served by hyper with a cap on
//! connections at once, a deadline for the request head (slowloris) and for each answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{ServerConfig, ServerError};

/// How long a kept-alive connection may sit idle between requests.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The running accept loops; dropping them stops accepting and closes open connections.
pub(crate) struct Listeners {
    tasks: JoinSet<()>,
    addrs: Vec<SocketAddr>,
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

impl Listeners {
    pub(crate) async fn bind(config: &ServerConfig, router: Router) -> Result<Self, ServerError> {
        let limits = Limits {
            connections: Arc::new(Semaphore::new(config.max_connections.max(1))),
            request_timeout: config.request_timeout.0,
        };
        let mut tasks = JoinSet::new();
        let mut addrs = Vec::new();
        for addr in config.tcp_addresses() {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })?;
            let local = listener.local_addr().unwrap_or(addr);
            addrs.push(local);
            tracing::info!("server listening on http://{local}");
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
        if let Some(socket) = &config.socket {
            let path = socket.path.clone();
            let fail = |source| ServerError::Socket {
                path: path.clone(),
                source,
            };
            remove_stale_socket(&path).map_err(fail)?;
            let listener = UnixListener::bind(&path).map_err(fail)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(socket.mode.0))
                .map_err(fail)?;
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
        Ok(Listeners { tasks, addrs })
    }

    pub(crate) fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }

    pub(crate) fn stop(&mut self) {
        self.tasks.abort_all();
    }
}

/// Only a socket (not a regular file someone put there) is replaced.
fn remove_stale_socket(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "a file that is not a socket is in the way",
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
}

impl Limits {
    fn serve<S>(&self, stream: S, router: Router)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // Over the cap the connection is closed at once: it costs nothing to keep out.
        let Ok(permit) = Arc::clone(&self.connections).try_acquire_owned() else {
            return;
        };
        let timeout = self.request_timeout;
        tokio::spawn(async move {
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
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout.min(IDLE_TIMEOUT))
                .serve_connection(TokioIo::new(stream), service)
                // WebSockets (connection-bound registrations) take the connection over.
                .with_upgrades();
            // A connection lives at most as long as a few idle periods; a client that trickles
            // its body forever is cut off here.
            let _ = tokio::time::timeout(IDLE_TIMEOUT.saturating_mul(10), connection).await;
            drop(permit);
        });
    }
}
