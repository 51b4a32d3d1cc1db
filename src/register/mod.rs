//! `elasticd register`: the client side of push registration. It registers a backend with a
//! daemon's server and keeps it registered (renewing a lease at a third of its TTL, or holding a
//! WebSocket open), reconnects with exponential backoff up to 5 minutes, and deregisters (after
//! an optional drain) on SIGTERM or SIGINT.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use hyper::body::Bytes;
use hyper::{Method, header};
use tokio::signal::unix::{SignalKind, signal};
use tokio_tungstenite::tungstenite::Message;

pub use crate::http_client::Endpoint;
use crate::http_client::{self, Call, WsError, encode};
use crate::secret::Secret;

/// The largest answer read.
const MAX_REPLY: usize = 1024 * 1024;

/// A server's answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: String,
}

impl Reply {
    fn new(status: hyper::StatusCode, body: &[u8]) -> Reply {
        Reply {
            status: status.as_u16(),
            body: String::from_utf8_lossy(body).into_owned(),
        }
    }

    /// The `error` of a JSON error body, or the body itself.
    pub fn error(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
            .unwrap_or_else(|| self.body.trim().chars().take(200).collect())
    }
}

/// One request on a fresh connection, with the token when given.
async fn request(
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    token: Option<&Secret>,
    body: &str,
) -> Result<Reply, http_client::ClientError> {
    let mut headers = vec![(header::CONTENT_TYPE, "application/json".to_string())];
    if let Some(token) = token {
        headers.push((header::AUTHORIZATION, format!("Bearer {}", token.expose())));
    }
    let call = Call {
        method,
        path,
        headers,
        body: Bytes::copy_from_slice(body.as_bytes()),
        max_answer: MAX_REPLY,
    };
    let answer = http_client::send(endpoint, call).await?;
    Ok(Reply::new(answer.status, &answer.body))
}

/// The longest wait between two attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// The first wait after a failed attempt.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// How long a request to the server may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What to register, where, and how to keep it.
#[derive(Debug, Clone)]
pub struct Options {
    /// The daemon's server.
    pub server: Endpoint,
    /// The service to register into.
    pub service: String,
    /// The registration's id.
    pub id: String,
    /// The backend's IP address.
    pub address: String,
    /// Its port.
    pub port: u16,
    /// Its weight.
    pub weight: Option<u32>,
    /// Labels.
    pub meta: Vec<(String, String)>,
    /// The token, read from `--token-file`.
    pub token: Secret,
    /// `Some(ttl)` for a lease, `None` for a connection.
    pub ttl: Option<Duration>,
    /// The environment to state.
    pub environment: Option<String>,
    /// Deregister after this drain on stop.
    pub drain: Option<Duration>,
    /// Registered only while this local check passes.
    pub check: Option<Check>,
}

/// How often the local check runs.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long one check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// A local health check: the backend stays registered only while it passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// `GET http://HOST:PORT/PATH` must answer 2xx.
    Http {
        /// `HOST:PORT`.
        host: String,
        /// The path, from `/`.
        path: String,
    },
    /// A TCP connection to `HOST:PORT` must open.
    Tcp(String),
}

impl Check {
    /// `--check http://HOST:PORT/PATH`.
    pub fn http(url: &str) -> Result<Check, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("`{url}` is not an http:// URL"))?;
        let (host, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        if host.is_empty() {
            return Err(format!("`{url}` names no host"));
        }
        Ok(Check::Http {
            host: host.to_string(),
            path: path.to_string(),
        })
    }

    async fn passes(&self) -> bool {
        let run = async {
            match self {
                Check::Tcp(addr) => tokio::net::TcpStream::connect(addr.as_str()).await.is_ok(),
                Check::Http { host, path } => {
                    let endpoint = Endpoint::Tcp(host.clone());
                    // The daemon's token is not the backend's business: none is sent.
                    request(&endpoint, Method::GET, path, None, "")
                        .await
                        .is_ok_and(|r| (200..300).contains(&r.status))
                }
            }
        };
        tokio::time::timeout(CHECK_TIMEOUT, run)
            .await
            .unwrap_or(false)
    }
}

/// Why `register` gave up.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The server refused the registration for good (token, environment, address, service).
    #[error("the server refused the registration ({status}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The server's `error`.
        message: String,
    },
    /// The token file could not be used.
    #[error("token file {}: {reason}", path.display())]
    Token {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Signals could not be listened for.
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
}

/// Statuses that another try won't change: the client must be fixed.
fn permanent(status: u16) -> bool {
    matches!(status, 400 | 401 | 403 | 404 | 409 | 413 | 415)
}

/// Exponential backoff from [`BACKOFF_BASE`] up to [`BACKOFF_MAX`].
struct Backoff(u32);

impl Backoff {
    fn next(&mut self) -> Duration {
        let wait = BACKOFF_BASE
            .saturating_mul(2u32.saturating_pow(self.0.min(16)))
            .min(BACKOFF_MAX);
        self.0 = self.0.saturating_add(1);
        wait
    }
}

/// Resolves on SIGTERM or SIGINT.
struct Stop {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Stop {
    fn new() -> Result<Stop, RegisterError> {
        Ok(Stop {
            term: signal(SignalKind::terminate()).map_err(RegisterError::Signals)?,
            int: signal(SignalKind::interrupt()).map_err(RegisterError::Signals)?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

impl Options {
    fn path(&self) -> String {
        format!(
            "/api/v1/registry/{}/{}",
            encode(&self.service),
            encode(&self.id)
        )
    }

    fn body(&self, ttl: Duration) -> String {
        let meta: serde_json::Map<String, serde_json::Value> = self
            .meta
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        serde_json::json!({
            "address": self.address,
            "port": self.port,
            "weight": self.weight,
            "meta": meta,
            "ttl": format!("{}ms", ttl.as_millis()),
            "environment": self.environment,
        })
        .to_string()
    }

    async fn call(&self, method: Method, path: &str, body: &str) -> Result<Reply, String> {
        let request = request(&self.server, method, path, Some(&self.token), body);
        match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("no answer within 10s".into()),
        }
    }

    async fn deregister(&self) {
        self.remove(self.drain).await;
    }

    async fn remove(&self, drain: Option<Duration>) {
        let mut path = self.path();
        if let Some(drain) = drain {
            path.push_str(&format!("?drain={}ms", drain.as_millis()));
        }
        match self.call(Method::DELETE, &path, "").await {
            Ok(r) if r.status == 200 => tracing::info!("deregistered {}", self.id),
            Ok(r) => tracing::warn!("deregistering {}: {}: {}", self.id, r.status, r.error()),
            Err(e) => tracing::warn!("deregistering {}: {e}", self.id),
        }
        if let Some(drain) = drain {
            // The frontend sends no new requests meanwhile; the backend finishes what it has.
            tracing::info!("draining for {}", humantime::format_duration(drain));
            tokio::time::sleep(drain).await;
        }
    }
}

/// Registers and keeps the registration until SIGTERM or SIGINT.
pub async fn run(options: Options) -> Result<(), RegisterError> {
    let mut stop = Stop::new()?;
    match options.ttl {
        Some(ttl) => lease(&options, ttl, &mut stop).await,
        None => connection(&options, &mut stop).await,
    }
}

async fn lease(o: &Options, ttl: Duration, stop: &mut Stop) -> Result<(), RegisterError> {
    let mut backoff = Backoff(0);
    let mut registered = false;
    let path = o.path();
    let body = o.body(ttl);
    let mut next_put = tokio::time::Instant::now();
    loop {
        let healthy = match &o.check {
            Some(check) => check.passes().await,
            None => true,
        };
        if !healthy {
            if registered {
                tracing::warn!("the local check failed: deregistering {}", o.id);
                o.remove(None).await;
                registered = false;
            }
            // Registered again as soon as the check passes.
            next_put = tokio::time::Instant::now();
        } else if tokio::time::Instant::now() >= next_put {
            let wait = match o.call(Method::PUT, &path, &body).await {
                Ok(r) if r.status == 200 => {
                    if !registered {
                        tracing::info!(
                            "registered {} into {} (lease, ttl {})",
                            o.id,
                            o.service,
                            humantime::format_duration(ttl)
                        );
                        registered = true;
                    }
                    backoff = Backoff(0);
                    ttl / 3
                }
                Ok(r) if permanent(r.status) => {
                    return Err(RegisterError::Refused {
                        status: r.status,
                        message: r.error(),
                    });
                }
                other => {
                    let why = match other {
                        Ok(r) => format!("{}: {}", r.status, r.error()),
                        Err(e) => e,
                    };
                    let wait = backoff.next();
                    tracing::warn!(
                        "registering {}: {why}; next try in {}",
                        o.id,
                        humantime::format_duration(wait)
                    );
                    registered = false;
                    wait
                }
            };
            next_put = tokio::time::Instant::now() + wait;
        }
        let until_put = next_put.saturating_duration_since(tokio::time::Instant::now());
        let wait = match o.check {
            Some(_) => until_put.min(CHECK_EVERY),
            None => until_put,
        };
        tokio::select! {
            _ = stop.wait() => {
                if registered {
                    o.deregister().await;
                }
                return Ok(());
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Waits until the local check passes (at once without one); false when told to stop first.
async fn until_healthy(o: &Options, stop: &mut Stop) -> bool {
    let Some(check) = &o.check else {
        return true;
    };
    loop {
        if check.passes().await {
            return true;
        }
        tokio::select! {
            _ = stop.wait() => return false,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
    }
}

async fn connection(o: &Options, stop: &mut Stop) -> Result<(), RegisterError> {
    let mut backoff = Backoff(0);
    let mut query = format!("address={}&port={}", encode(&o.address), o.port);
    if let Some(w) = o.weight {
        query.push_str(&format!("&weight={w}"));
    }
    if let Some(env) = &o.environment {
        query.push_str(&format!("&environment={}", encode(env)));
    }
    for (k, v) in &o.meta {
        query.push_str(&format!("&meta.{}={}", encode(k), encode(v)));
    }
    let path = format!("{}/connect?{query}", o.path());
    loop {
        if !until_healthy(o, stop).await {
            return Ok(());
        }
        let auth = vec![(
            header::AUTHORIZATION,
            format!("Bearer {}", o.token.expose()),
        )];
        let why = match http_client::websocket(&o.server, &path, auth).await {
            Ok(mut socket) => {
                tracing::info!("registered {} into {} (connection)", o.id, o.service);
                backoff = Backoff(0);
                let mut checks = tokio::time::interval(CHECK_EVERY);
                loop {
                    tokio::select! {
                        _ = checks.tick(), if o.check.is_some() => {
                            if let Some(check) = &o.check && !check.passes().await {
                                let _ = socket.close(None).await;
                                tracing::warn!("the local check failed: deregistered {}", o.id);
                                // Not a server problem: no backoff, back as soon as it passes.
                                backoff = Backoff(0);
                                break "the local check failed".to_string();
                            }
                        }
                        _ = stop.wait() => {
                            if o.drain.is_some() {
                                // The drain outlives the connection: it turns it into a lease.
                                o.deregister().await;
                            }
                            let _ = socket.close(None).await;
                            if o.drain.is_none() {
                                tracing::info!("deregistered {}", o.id);
                            }
                            return Ok(());
                        }
                        message = socket.next() => match message {
                            // Pings are answered by the library as they are read.
                            Some(Ok(Message::Close(_))) | None => break "the server closed the connection".to_string(),
                            Some(Err(e)) => break e.to_string(),
                            Some(Ok(_)) => {}
                        },
                    }
                }
            }
            Err(WsError::Refused { status, body }) => {
                let r = Reply::new(status, &body);
                if permanent(r.status) {
                    return Err(RegisterError::Refused {
                        status: r.status,
                        message: r.error(),
                    });
                }
                format!("{}: {}", r.status, r.error())
            }
            Err(WsError::Failed(e)) => e,
        };
        let wait = backoff.next();
        tracing::warn!(
            "connection for {}: {why}; reconnecting in {}",
            o.id,
            humantime::format_duration(wait)
        );
        tokio::select! {
            _ = stop.wait() => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Reads the token of `--token-file`.
pub fn read_token(path: &std::path::Path) -> Result<Secret, RegisterError> {
    Secret::read(path).map_err(|e| RegisterError::Token {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}
