//! `http: {...}`: one HTTP/1.1 request per probe, through hyper's client.
//!
//! A connection that passed a probe stays open for the next probes of the same backend
//! (HTTP keep-alive, like Envoy's `reuse_connection`), for up to
//! [`MAX_REQUESTS_PER_CONNECTION`] requests: a new connection per probe costs a TCP handshake
//! and teardown on both sides, most of the CPU a probe takes. Reuse must not hide a backend
//! that still answers on old connections but accepts no new ones (its listener closed, its
//! accept queue full), which is what the frontend needs from it; so every
//! [`MAX_REQUESTS_PER_CONNECTION`]-th probe, and every probe after a failure, connects anew.
//! `reuse_connection: false` connects anew for each probe.

use std::collections::BTreeMap;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;

use super::{ProbeSpec, Session, Target};
use crate::value::BoxFuture;

/// How much of a body `expect_body` looks at; probes are meant to hit small status pages.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Requests one kept connection carries before the probe after them connects anew.
pub const MAX_REQUESTS_PER_CONNECTION: u32 = 10;

/// `http: { path, port, host, method, expect_status, expect_body, headers, tls }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    /// Path and query of the request (default `/`).
    #[serde(default = "default_path")]
    pub path: String,
    /// Port to probe instead of the backend's.
    #[serde(default)]
    pub port: Option<u16>,
    /// `Host` header (default the backend's `address:port`).
    #[serde(default)]
    pub host: Option<String>,
    /// `GET` (default) or `HEAD`.
    #[serde(default)]
    pub method: HttpMethod,
    /// Statuses that pass: `200`, `200-399` (default), or a list of either.
    #[serde(default)]
    pub expect_status: StatusRanges,
    /// A substring the body must contain; a body over [`MAX_BODY_BYTES`] fails the probe.
    #[serde(default)]
    pub expect_body: Option<String>,
    /// More request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Speak TLS (HTTPS); the certificate is not verified (see [`super::tls`]).
    #[serde(default)]
    pub tls: bool,
    /// Keep a passing probe's connection open for the next probes (default true).
    #[serde(default = "default_reuse")]
    pub reuse_connection: bool,
}

fn default_reuse() -> bool {
    true
}

fn default_path() -> String {
    "/".into()
}

/// The request methods a probe may use: they must not change anything on the backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum HttpMethod {
    /// `GET`.
    #[default]
    #[serde(alias = "get")]
    GET,
    /// `HEAD`.
    #[serde(alias = "head")]
    HEAD,
}

/// Status ranges, inclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRanges(pub Vec<(u16, u16)>);

impl Default for StatusRanges {
    fn default() -> Self {
        StatusRanges(vec![(200, 399)])
    }
}

impl StatusRanges {
    /// Whether `status` is one of them.
    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }

    fn parse_one(text: &str) -> Result<(u16, u16), String> {
        let status = |s: &str| match s.trim().parse::<u16>() {
            Ok(n) if (100..=599).contains(&n) => Ok(n),
            _ => Err(format!(
                "`{s}` is not an HTTP status (100-599) in `expect_status`"
            )),
        };
        match text.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (status(lo)?, status(hi)?);
                if lo > hi {
                    return Err(format!("`{text}` in `expect_status` is an empty range"));
                }
                Ok((lo, hi))
            }
            None => status(text).map(|n| (n, n)),
        }
    }
}

impl<'de> Deserialize<'de> for StatusRanges {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum One {
            Number(u16),
            Text(String),
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(One),
            Many(Vec<One>),
        }
        let items = match Raw::deserialize(d)? {
            Raw::One(one) => vec![one],
            Raw::Many(many) => many,
        };
        let ranges = items
            .into_iter()
            .map(|one| match one {
                One::Number(n) => StatusRanges::parse_one(&n.to_string()),
                One::Text(t) => StatusRanges::parse_one(&t),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(serde::de::Error::custom)?;
        if ranges.is_empty() {
            return Err(serde::de::Error::custom("`expect_status` is empty"));
        }
        Ok(StatusRanges(ranges))
    }
}

/// What a probe speaks HTTP over: a TCP stream, or TLS on one.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// A connection a passing probe left open for the next probe of the same backend. Only the
/// socket is kept, not hyper's connection: its buffers (some 16 KiB) would be held by every
/// backend between probes, for a handshake that costs no I/O to make again.
struct Kept {
    io: Box<dyn Io>,
    /// Requests it has carried.
    uses: u32,
    /// Counts it against the budget of connections kept open.
    permit: OwnedSemaphorePermit,
}

/// The parts of the probe's request, built once per backend.
struct Prepared {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

/// What the probes of one backend keep: the request, and the connection the last passing probe
/// left open.
struct State {
    prepared: Prepared,
    kept: Option<Kept>,
}

/// How one request on one connection went.
enum Exchange {
    /// The backend answered: `result` is the verdict, `reusable` whether the connection may
    /// carry the next probe.
    Answered {
        result: Result<(), String>,
        reusable: bool,
    },
    /// The connection closed or failed before a whole answer came.
    Lost(String),
}

impl HttpProbe {
    fn prepare(&self, target: &Target) -> Result<State, String> {
        let method = match self.method {
            HttpMethod::GET => Method::GET,
            HttpMethod::HEAD => Method::HEAD,
        };
        let uri = self
            .path
            .parse::<Uri>()
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let host = match &self.host {
            Some(host) => HeaderValue::from_str(host),
            None => HeaderValue::from_str(&target.endpoint()),
        }
        .map_err(|e| format!("cannot build the request: {e}"))?;
        let mut headers = HeaderMap::with_capacity(2 + self.headers.len());
        headers.insert(hyper::header::HOST, host);
        headers.insert(
            hyper::header::USER_AGENT,
            HeaderValue::from_static(concat!("elasticd-health/", env!("CARGO_PKG_VERSION"))),
        );
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| format!("cannot build the request: {e}"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|e| format!("cannot build the request: {e}"))?;
            headers.append(name, value);
        }
        Ok(State {
            prepared: Prepared {
                method,
                uri,
                headers,
            },
            kept: None,
        })
    }

    async fn run(&self, target: &Target, session: &mut Session) -> Result<(), String> {
        let mut state = match session.take::<State>() {
            Some(state) => state,
            None => Box::new(self.prepare(target)?),
        };
        // A kept connection the backend closed meanwhile (its keep-alive timeout, a restart)
        // says nothing about the backend: only a new connection's failure counts.
        if let Some(kept) = state.kept.take() {
            let (outcome, kept) = self
                .exchange(kept.io, kept.uses, Some(kept.permit), &state.prepared)
                .await;
            if let Exchange::Answered { result, .. } = outcome {
                state.kept = kept;
                session.put(state);
                return result;
            }
        }
        let permit = match self.reuse_connection {
            true => session.keep_permit(),
            false => None,
        };
        let io = match self.connect(target).await {
            Ok(io) => io,
            Err(e) => {
                session.put(state);
                return Err(e);
            }
        };
        let (outcome, kept) = self.exchange(io, 0, permit, &state.prepared).await;
        state.kept = kept;
        session.put(state);
        match outcome {
            Exchange::Answered { result, .. } => result,
            Exchange::Lost(e) => Err(e),
        }
    }

    async fn connect(&self, target: &Target) -> Result<Box<dyn Io>, String> {
        if self.tls {
            let stream = super::tls::connect(target, self.host.as_deref()).await?;
            return Ok(Box::new(stream));
        }
        let stream = target
            .connect()
            .await
            .map_err(|e| format!("connect failed: {e}"))?;
        // A request is one write; without Nagle a request on a kept connection never waits
        // for the previous answer's delayed ACK.
        let _ = stream.set_nodelay(true);
        Ok(Box::new(stream))
    }

    /// Sends the probe's request on `io` (which has carried `uses` requests before) and judges
    /// the answer; gives the connection back when it passed and may carry the next probe.
    async fn exchange(
        &self,
        io: Box<dyn Io>,
        uses: u32,
        permit: Option<OwnedSemaphorePermit>,
        prepared: &Prepared,
    ) -> (Exchange, Option<Kept>) {
        let uses = uses.saturating_add(1);
        // The last request a connection carries says so: the backend closes first, so the
        // closed socket's TIME_WAIT stays on its side and no local port is held.
        let last = permit.is_none() || uses >= MAX_REQUESTS_PER_CONNECTION;
        let mut request = Request::new(Empty::<Bytes>::new());
        *request.method_mut() = prepared.method.clone();
        *request.uri_mut() = prepared.uri.clone();
        *request.headers_mut() = prepared.headers.clone();
        if last {
            request
                .headers_mut()
                .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        }
        let (mut sender, mut driver) =
            match hyper::client::conn::http1::handshake(TokioIo::new(io)).await {
                Ok(pair) => pair,
                Err(e) => return (Exchange::Lost(format!("HTTP handshake failed: {e}")), None),
            };
        let mut closed = false;
        let outcome = {
            // The connection is driven here, beside the request, not in a task of its own:
            // when the probe times out and its future is dropped, the socket goes with it.
            let work = self.send(&mut sender, request, last);
            let mut work = std::pin::pin!(work);
            loop {
                tokio::select! {
                    outcome = &mut work => break outcome,
                    done = &mut driver, if !closed => {
                        closed = true;
                        if let Err(e) = done {
                            break Exchange::Lost(format!("connection failed: {e}"));
                        }
                    }
                }
            }
        };
        let reusable = matches!(
            outcome,
            Exchange::Answered {
                result: Ok(()),
                reusable: true
            }
        );
        let kept = match (reusable && !closed, permit) {
            (true, Some(permit)) => {
                drop(sender);
                let parts = driver.into_parts();
                // Bytes past the answer would be read as the next answer: not reusable.
                parts.read_buf.is_empty().then(|| Kept {
                    io: parts.io.into_inner(),
                    uses,
                    permit,
                })
            }
            _ => None,
        };
        (outcome, kept)
    }

    /// Sends `request` and judges the answer; `last`: the connection is not reused after it.
    async fn send(
        &self,
        sender: &mut SendRequest<Empty<Bytes>>,
        request: Request<Empty<Bytes>>,
        last: bool,
    ) -> Exchange {
        if let Err(e) = sender.ready().await {
            return Exchange::Lost(format!("request failed: {e}"));
        }
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(e) => return Exchange::Lost(format!("request failed: {e}")),
        };
        let status = response.status().as_u16();
        if !self.expect_status.contains(status) {
            return Exchange::Answered {
                result: Err(format!("answered status {status}")),
                reusable: false,
            };
        }
        let reusable = !last && keeps_alive(&response);
        let body = response.into_body();
        let Some(expected) = &self.expect_body else {
            // The body is read to its end (and dropped) only so that the connection can carry
            // the next probe; a long one is not worth it.
            let whole = reusable && drain(body, MAX_BODY_BYTES).await;
            return Exchange::Answered {
                result: Ok(()),
                reusable: whole,
            };
        };
        // A body over the limit fails the probe: status pages are small, and reading on would
        // let one backend make every probe of it hold more memory.
        let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => {
                return Exchange::Answered {
                    result: Err(format!("reading the body failed: {e}")),
                    reusable: false,
                };
            }
        };
        let result = if contains(&body, expected.as_bytes()) {
            Ok(())
        } else {
            Err(format!(
                "answered status {status} without `{}` in the body",
                crate::logline::sanitize(expected)
            ))
        };
        Exchange::Answered { result, reusable }
    }
}

/// Whether the answer leaves the connection open (HTTP/1.1 without `Connection: close`).
fn keeps_alive<B>(response: &hyper::Response<B>) -> bool {
    response.version() == hyper::Version::HTTP_11
        && !response
            .headers()
            .get_all(hyper::header::CONNECTION)
            .iter()
            .any(|v| {
                v.to_str()
                    .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
            })
}

/// Reads `body` to its end, dropping it; false if it ended in an error or passed `limit`.
async fn drain(mut body: hyper::body::Incoming, limit: usize) -> bool {
    let mut read = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return false;
        };
        if let Some(data) = frame.data_ref() {
            read = read.saturating_add(data.len());
            if read > limit {
                return false;
            }
        }
    }
    true
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

impl ProbeSpec for HttpProbe {
    fn probe<'a>(
        &'a self,
        target: &'a Target,
        session: &'a mut Session,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.run(target, session))
    }

    fn port(&self) -> Option<u16> {
        self.port
    }

    fn validate(&self) -> Result<(), String> {
        if self.port == Some(0) {
            return Err("http: port 0 is not a usable port".into());
        }
        if !self.path.starts_with('/') || self.path.parse::<hyper::Uri>().is_err() {
            return Err(format!(
                "http: `path` must be a URL path starting with `/`, not `{}`",
                crate::logline::sanitize(&self.path)
            ));
        }
        if self.expect_body.is_some() && self.method == HttpMethod::HEAD {
            return Err(
                "http: `expect_body` needs `method: GET` (a HEAD answer has no body)".into(),
            );
        }
        if let Some(host) = &self.host
            && HeaderValue::from_str(host).is_err()
        {
            return Err("http: `host` is not a valid header value".into());
        }
        for (name, value) in &self.headers {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(format!(
                    "http: `{}` is not a valid header name",
                    crate::logline::sanitize(name)
                ));
            }
            if HeaderValue::from_str(value).is_err() {
                return Err(format!(
                    "http: the value of header `{name}` is not a valid header value"
                ));
            }
        }
        Ok(())
    }
}
