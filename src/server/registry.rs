//! Push registration endpoints under `/api/v1/registry`: leases (`PUT`, `POST .../renew`,
//! `DELETE`), the list, and connection-bound registrations over a WebSocket. They all need the
//! server's token or one of the service's scoped tokens; the store ([`crate::registry`]) decides
//! the rest and wakes the daemon.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::Shared;
use super::routes::{authorize, error};
use crate::registry::{self, Hold, Registration, RegistryError};

/// How often a connection-bound registration is pinged; two missed pongs close it.
const PING_EVERY: Duration = Duration::from_secs(1);
/// The longest `?drain=` accepted.
const MAX_DRAIN: Duration = Duration::from_secs(3600);

/// The `/api/v1/registry` routes, for the server's router to merge.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v1/registry/{service}", get(list))
        .route(
            "/api/v1/registry/{service}/{id}",
            put(register).delete(deregister),
        )
        .route("/api/v1/registry/{service}/{id}/renew", post(renew))
        .route("/api/v1/registry/{service}/{id}/connect", get(connect))
}

/// The server's token, or a scoped token of `service`.
fn allowed(shared: &Shared, headers: &HeaderMap, service: &str) -> Result<(), Box<Response>> {
    let offered = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    if offered.is_some_and(|t| registry::global().scoped_token(service, t)) {
        return Ok(());
    }
    authorize(shared, headers)
}

/// The store's refusal as an HTTP answer; an unknown service and one without a `registry`
/// locator are told apart.
fn refused(shared: &Shared, e: RegistryError) -> Response {
    let code = match &e {
        RegistryError::NotRegistry(name) => {
            if !shared
                .status
                .borrow()
                .services
                .iter()
                .any(|s| &s.name == name)
            {
                return error(StatusCode::NOT_FOUND, format!("no service named `{name}`"));
            }
            StatusCode::NOT_FOUND
        }
        RegistryError::BadField { .. } => StatusCode::BAD_REQUEST,
        RegistryError::NotAllowed { .. } => StatusCode::FORBIDDEN,
        RegistryError::Environment { .. } => {
            tracing::warn!("registration refused: {e}");
            StatusCode::CONFLICT
        }
        RegistryError::Full { .. } => StatusCode::INSUFFICIENT_STORAGE,
        RegistryError::UnknownLease { .. } => StatusCode::NOT_FOUND,
        RegistryError::Conflict { .. } => StatusCode::CONFLICT,
    };
    error(code, e.to_string())
}

async fn list(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(service): Path<String>,
) -> Response {
    if let Err(r) = allowed(&shared, &headers, &service) {
        return *r;
    }
    match registry::global().list(&service, Instant::now()) {
        Ok(leases) => Json(leases).into_response(),
        Err(e) => refused(&shared, e),
    }
}

async fn register(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((service, id)): Path<(String, String)>,
    body: Result<Json<Registration>, JsonRejection>,
) -> Response {
    if let Err(r) = allowed(&shared, &headers, &service) {
        return *r;
    }
    let Json(registration) = match body {
        Ok(b) => b,
        Err(e) => return error(e.status(), e.body_text()),
    };
    match registry::global().register(&service, &id, &registration, Hold::Lease, Instant::now()) {
        Ok(view) => Json(view).into_response(),
        Err(e) => refused(&shared, e),
    }
}

async fn renew(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((service, id)): Path<(String, String)>,
) -> Response {
    if let Err(r) = allowed(&shared, &headers, &service) {
        return *r;
    }
    match registry::global().renew(&service, &id, Instant::now()) {
        Ok(view) => Json(view).into_response(),
        Err(e) => refused(&shared, e),
    }
}

#[derive(Deserialize)]
struct DrainQuery {
    drain: Option<String>,
}

#[derive(Serialize)]
struct Removed {
    id: String,
    service: String,
    drain_seconds: f64,
}

async fn deregister(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((service, id)): Path<(String, String)>,
    Query(query): Query<DrainQuery>,
) -> Response {
    if let Err(r) = allowed(&shared, &headers, &service) {
        return *r;
    }
    let drain = match query.drain.as_deref().map(humantime::parse_duration) {
        None => None,
        Some(Ok(d)) if d <= MAX_DRAIN => Some(d),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "`drain`: must be a duration like `5s`, at most 1h",
            );
        }
    };
    match registry::global().deregister(&service, &id, drain, Instant::now()) {
        Ok(()) => Json(Removed {
            id,
            service,
            drain_seconds: drain.unwrap_or_default().as_secs_f64(),
        })
        .into_response(),
        Err(e) => refused(&shared, e),
    }
}

/// The registration of a WebSocket, from its query string:
/// `?address=A&port=P&weight=W&environment=E&meta.KEY=VALUE`.
fn connect_registration(query: BTreeMap<String, String>) -> Result<Registration, String> {
    let mut r = Registration::default();
    for (key, value) in query {
        match key.as_str() {
            "address" => r.address = value,
            "port" => {
                r.port = value
                    .parse()
                    .map_err(|_| "`port`: must be a number (1-65535)".to_string())?
            }
            "weight" => {
                r.weight = Some(
                    value
                        .parse()
                        .map_err(|_| "`weight`: must be a number (1-100)".to_string())?,
                )
            }
            "environment" => r.environment = Some(value),
            _ => match key.strip_prefix("meta.") {
                Some(k) => {
                    r.meta.insert(k.to_string(), value);
                }
                None => {
                    return Err(format!(
                        "unknown parameter `{}`; expected address, port, weight, environment \
                         or meta.KEY",
                        key.chars().take(64).collect::<String>().escape_debug()
                    ));
                }
            },
        }
    }
    if r.address.is_empty() {
        return Err("`address`: required".into());
    }
    Ok(r)
}

/// Removes the registration when dropped: when the connection ends, and also when the upgrade
/// never happens.
struct Bound {
    service: String,
    id: String,
    connection: u64,
}

impl Drop for Bound {
    fn drop(&mut self) {
        if registry::global().disconnect(&self.service, &self.id, self.connection) {
            tracing::info!(service = %self.service, id = %self.id, "connection closed: registration removed");
        }
    }
}

async fn connect(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((service, id)): Path<(String, String)>,
    query: Result<Query<BTreeMap<String, String>>, axum::extract::rejection::QueryRejection>,
    ws: WebSocketUpgrade,
) -> Response {
    static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
    if let Err(r) = allowed(&shared, &headers, &service) {
        return *r;
    }
    let registration = match query
        .map_err(|e| e.body_text())
        .and_then(|Query(q)| connect_registration(q))
    {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let connection = CONNECTIONS.fetch_add(1, Ordering::Relaxed);
    let view = match registry::global().register(
        &service,
        &id,
        &registration,
        Hold::Connection(connection),
        Instant::now(),
    ) {
        Ok(v) => v,
        Err(e) => return refused(&shared, e),
    };
    let bound = Bound {
        service,
        id,
        connection,
    };
    let hello = serde_json::to_string(&view).unwrap_or_default();
    ws.on_upgrade(move |socket| hold(socket, bound, hello))
}

/// Keeps the registration while the client answers pings.
async fn hold(mut socket: WebSocket, bound: Bound, hello: String) {
    if socket.send(Message::Text(hello.into())).await.is_err() {
        return;
    }
    let mut ticks = tokio::time::interval(PING_EVERY);
    let mut last_pong = Instant::now();
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                if last_pong.elapsed() > PING_EVERY.saturating_mul(2) {
                    tracing::info!(service = %bound.service, id = %bound.id, "two pings unanswered: closing");
                    break;
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
            message = socket.recv() => match message {
                Some(Ok(Message::Pong(_))) => last_pong = Instant::now(),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                // Anything else the client says also shows it is alive.
                Some(Ok(_)) => last_pong = Instant::now(),
            },
        }
    }
    drop(bound);
}
