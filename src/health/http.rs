//! `http: {...}`: one HTTP/1.1 request per probe on a fresh connection, through hyper's client.
//!
//! A fresh connection each time is deliberate: a pooled one would keep passing while the
//! backend no longer accepts new connections, which is what the frontend needs from it.

use std::collections::BTreeMap;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use super::{ProbeSpec, Target};
use crate::value::BoxFuture;

/// How much of a body `expect_body` looks at; probes are meant to hit small status pages.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

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

impl HttpProbe {
    fn request(&self, target: &Target) -> Result<Request<Empty<Bytes>>, String> {
        let method = match self.method {
            HttpMethod::GET => Method::GET,
            HttpMethod::HEAD => Method::HEAD,
        };
        let host = self.host.clone().unwrap_or_else(|| target.endpoint());
        let mut request = Request::builder()
            .method(method)
            .uri(self.path.as_str())
            .header(hyper::header::HOST, host)
            .header(
                hyper::header::USER_AGENT,
                concat!("elasticd-health/", env!("CARGO_PKG_VERSION")),
            )
            .header(hyper::header::CONNECTION, "close");
        for (name, value) in &self.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        request
            .body(Empty::new())
            .map_err(|e| format!("cannot build the request: {e}"))
    }

    async fn run(&self, target: &Target) -> Result<(), String> {
        let request = self.request(target)?;
        if self.tls {
            let stream = super::tls::connect(target, self.host.as_deref()).await?;
            self.exchange(stream, request).await
        } else {
            let stream = target
                .connect()
                .await
                .map_err(|e| format!("connect failed: {e}"))?;
            self.exchange(stream, request).await
        }
    }

    async fn exchange<IO>(&self, io: IO, request: Request<Empty<Bytes>>) -> Result<(), String>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP handshake failed: {e}"))?;
        // The connection is driven here, beside the request, not in a task of its own: when the
        // probe times out and its future is dropped, the socket goes with it.
        let mut connection = std::pin::pin!(connection);
        let exchange = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("request failed: {e}"))?;
            let status = response.status().as_u16();
            if !self.expect_status.contains(status) {
                return Err(format!("answered status {status}"));
            }
            if let Some(expected) = &self.expect_body {
                let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
                    .collect()
                    .await;
                // A body over the limit fails the probe: status pages are small, and reading
                // on would let one backend make every probe of it hold more memory.
                let body = body.map_err(|e| format!("reading the body failed: {e}"))?;
                let bytes = body.to_bytes();
                if !contains(&bytes, expected.as_bytes()) {
                    return Err(format!(
                        "answered status {status} without `{}` in the body",
                        crate::logline::sanitize(expected)
                    ));
                }
            }
            Ok(())
        };
        let mut exchange = std::pin::pin!(exchange);
        let mut driving = true;
        loop {
            tokio::select! {
                result = &mut exchange => return result,
                done = &mut connection, if driving => {
                    driving = false;
                    if let Err(e) = done {
                        return Err(format!("connection failed: {e}"));
                    }
                }
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

impl ProbeSpec for HttpProbe {
    fn probe<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.run(target))
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
