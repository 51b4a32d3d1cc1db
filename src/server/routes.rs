//! The endpoints. Read-only ones are open; mutating ones need the bearer token.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{Command, Shared};
use crate::status::{Readiness, Status};

/// The same refresh target is accepted at most this often.
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let limit = shared.max_body_bytes;
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/api/v1/services", get(services))
        .route("/api/v1/services/{name}", get(service))
        .route("/api/v1/frontends", get(frontends))
        .route("/api/v1/outputs", get(outputs))
        .route("/api/v1/changes", get(changes))
        .route("/api/v1/refresh", post(refresh))
        .merge(super::registry::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(shared)
}

/// `{"error": "..."}` with a status code.
pub(crate) fn error(code: StatusCode, message: impl Into<String>) -> Response {
    #[derive(Serialize)]
    struct Body {
        error: String,
    }
    (
        code,
        Json(Body {
            error: message.into(),
        }),
    )
        .into_response()
}

pub(crate) fn timed_out() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "the request took too long")
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint; see /api/v1/status",
    )
}

fn current(shared: &Shared) -> Arc<Status> {
    Arc::clone(&shared.status.borrow())
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let readiness = current(&shared).readiness(SystemTime::now());
    let code = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(readiness)).into_response()
}

async fn metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        crate::metrics::metrics().encode(),
    )
        .into_response()
}

/// The status document with its readiness.
#[derive(Serialize)]
struct StatusBody<'a> {
    #[serde(flatten)]
    status: &'a Status,
    ready: Readiness,
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    let status = current(&shared);
    Json(StatusBody {
        ready: status.readiness(SystemTime::now()),
        status: &status,
    })
    .into_response()
}

async fn services(State(shared): State<Arc<Shared>>) -> Response {
    Json(&current(&shared).services).into_response()
}

async fn service(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let status = current(&shared);
    match status.services.iter().find(|s| s.name == name) {
        Some(s) => Json(s).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no service named `{name}`")),
    }
}

async fn frontends(State(shared): State<Arc<Shared>>) -> Response {
    Json(&current(&shared).frontends).into_response()
}

async fn outputs(State(shared): State<Arc<Shared>>) -> Response {
    Json(&current(&shared).outputs).into_response()
}

async fn changes(State(shared): State<Arc<Shared>>) -> Response {
    Json(&current(&shared).changes).into_response()
}

async fn page(State(shared): State<Arc<Shared>>) -> Html<String> {
    Html(super::page::render(&current(&shared), SystemTime::now()))
}

/// Checks `Authorization: Bearer TOKEN`; the error response says what is missing, never what
/// the token is.
pub(crate) fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let token = shared.token.lock().ok().and_then(|t| t.clone());
    let Some(token) = token else {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "this endpoint is off: set server.token_file to enable it",
        )));
    };
    let offered = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match offered {
        Some(offered) if token.matches(offered) => Ok(()),
        offered => {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                if offered.is_some() {
                    "the bearer token is not the one in server.token_file"
                } else {
                    "this endpoint needs `Authorization: Bearer <token>`"
                },
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"elasticd\""),
            );
            Err(Box::new(response))
        }
    }
}

#[derive(Deserialize)]
struct RefreshQuery {
    service: Option<String>,
}

#[derive(Serialize)]
struct Refreshing {
    refreshing: Vec<String>,
}

async fn refresh(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<RefreshQuery>,
) -> Response {
    if let Err(response) = authorize(&shared, &headers) {
        return *response;
    }
    let target = query.service;
    let status = current(&shared);
    let names: Vec<String> = match &target {
        Some(name) if status.services.iter().any(|s| &s.name == name) => vec![name.clone()],
        Some(name) => {
            return error(StatusCode::NOT_FOUND, format!("no service named `{name}`"));
        }
        None => status.services.iter().map(|s| s.name.clone()).collect(),
    };
    let now = tokio::time::Instant::now();
    if let Ok(mut last) = shared.last_refresh.lock() {
        if last
            .get(&target)
            .is_some_and(|t| now.duration_since(*t) < REFRESH_INTERVAL)
        {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "a refresh was asked for less than a second ago",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
        last.insert(target.clone(), now);
    }
    if shared.commands.try_send(Command::Refresh(target)).is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is busy; try again shortly",
        );
    }
    (StatusCode::ACCEPTED, Json(Refreshing { refreshing: names })).into_response()
}
