//! The endpoints. Read-only ones are open; mutating ones need the bearer token.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{Command, Shared};
use crate::status::{Readiness, Status};

/// The same refresh target is accepted at most this often.
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) fn router(shared: Arc<Shared>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/", get(super::page::page))
        .route(super::page::CSS_PATH, get(super::page::css))
        .route(super::page::JS_PATH, get(super::page::js))
        .route(super::page::ICON_PATH, get(super::page::icon))
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
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(move |request, next| {
            limit_body(max_body_bytes, request, next)
        }))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(shared)
}

/// A body announced as bigger than `max` is refused before a byte of it is read, and the
/// connection is closed rather than drained; one sent without a length is cut off at `max`.
async fn limit_body(
    max: usize,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > u64::try_from(max).unwrap_or(u64::MAX)) {
        let mut response = error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than server.max_body_bytes ({max} bytes)"),
        );
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    let (parts, body) = request.into_parts();
    let body = axum::body::Body::new(http_body_util::Limited::new(body, max));
    next.run(axum::extract::Request::from_parts(parts, body))
        .await
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

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "this endpoint does not take that method; see docs/openapi.yaml",
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
    // The scheme is case-insensitive (RFC 9110); the token is not.
    let offered = headers.get(header::AUTHORIZATION).and_then(|v| {
        let v = v.as_bytes();
        let (scheme, rest) = v.split_at_checked(7)?;
        scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
    });
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
    // Checked, sent and recorded under one lock, so that two requests at once can't both pass;
    // a refused or failed request does not count against the next one.
    let mut last = shared
        .last_refresh
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
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
    if shared
        .commands
        .try_send(Command::Refresh(target.clone()))
        .is_err()
    {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is busy; try again shortly",
        );
    }
    last.insert(target, now);
    drop(last);
    (StatusCode::ACCEPTED, Json(Refreshing { refreshing: names })).into_response()
}
