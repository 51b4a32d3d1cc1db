//! `http: {...}`: one HTTP/1.1 request per probe, spoken directly (see [`HttpProbe::exchange`]).
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

use hyper::Uri;
use hyper::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A connection a passing probe left open for the next probe of the same backend: only the
/// socket, no buffers (a probe's read buffer lives as long as the probe).
struct Kept {
    io: Box<dyn Io>,
    /// Requests it has carried.
    uses: u32,
    /// Counts it against the budget of connections kept open.
    permit: OwnedSemaphorePermit,
}

/// The probe's request as bytes, built once per backend: one write per probe.
struct Prepared {
    /// The request on a connection that may carry the next one.
    keep: Box<[u8]>,
    /// The same with `Connection: close`, for a connection's last request.
    close: Box<[u8]>,
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

/// The most an answer's status line and headers may take.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The most headers an answer may have.
const MAX_HEADERS: usize = 64;
/// What a probe's read buffer starts with: a usual status answer fits at once.
const READ_CHUNK: usize = 1024;

/// How an answer's body ends (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (an answer to HEAD, 204, 304).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Up to the end of the connection.
    Close,
}

/// The parts of an answer's head a probe needs.
struct Head {
    status: u16,
    framing: Framing,
    keep_alive: bool,
}

/// Why reading a body stopped short.
enum BodyError {
    /// Past [`MAX_BODY_BYTES`].
    TooLong,
    /// The connection closed or failed, or the framing was broken.
    Broken(String),
}

/// A connection with the bytes read from it and not yet used.
struct Reader {
    io: Box<dyn Io>,
    buf: Vec<u8>,
    /// Where the unused bytes in `buf` start.
    pos: usize,
}

impl Reader {
    /// The unused bytes.
    fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Reads more onto the unused bytes; how much (0: the peer closed).
    async fn fill(&mut self) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.buf.reserve(READ_CHUNK);
        self.io.read_buf(&mut self.buf).await
    }

    /// Reads the status line and headers of the answer (skipping 1xx ones).
    async fn head(&mut self, head_request: bool) -> Result<Head, String> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(self.pending()) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = response.code.unwrap_or(0);
                    let head = judge_head(&response, status, head_request)?;
                    self.pos += len;
                    // 1xx are interim answers (101 is not asked for: no Upgrade is sent).
                    if (100..200).contains(&status) {
                        continue;
                    }
                    return Ok(head);
                }
                Ok(httparse::Status::Partial) => {
                    if self.pending().len() >= MAX_HEAD_BYTES {
                        return Err(format!(
                            "the answer's headers are over {MAX_HEAD_BYTES} bytes"
                        ));
                    }
                }
                Err(e) => return Err(format!("not an HTTP answer: {e}")),
            }
            match self.fill().await {
                Ok(0) if self.pending().is_empty() => {
                    return Err("the connection closed before an answer".into());
                }
                Ok(0) => return Err("the connection closed within the answer's headers".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("reading the answer failed: {e}")),
            }
        }
    }

    /// Reads `n` body bytes, appending them to `out` when given.
    async fn take(&mut self, mut n: u64, mut out: Option<&mut Vec<u8>>) -> Result<(), BodyError> {
        while n > 0 {
            if self.pending().is_empty() && self.fill_body().await? == 0 {
                return Err(BodyError::Broken(
                    "the connection closed within the body".into(),
                ));
            }
            let here = self
                .pending()
                .len()
                .min(usize::try_from(n).unwrap_or(usize::MAX));
            if let Some(out) = out.as_deref_mut() {
                out.extend_from_slice(&self.buf[self.pos..self.pos + here]);
            }
            self.pos += here;
            n -= here as u64;
        }
        Ok(())
    }

    /// Reads one CRLF-ended line of a chunked body, without the CRLF.
    async fn line(&mut self) -> Result<String, BodyError> {
        loop {
            if let Some(end) = self.pending().windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.pending()[..end]).into_owned();
                self.pos += end + 2;
                return Ok(line);
            }
            if self.pending().len() > 4096 {
                return Err(BodyError::Broken("a chunk line is too long".into()));
            }
            if self.fill_body().await? == 0 {
                return Err(BodyError::Broken(
                    "the connection closed within the body".into(),
                ));
            }
        }
    }

    async fn fill_body(&mut self) -> Result<usize, BodyError> {
        self.fill()
            .await
            .map_err(|e| BodyError::Broken(e.to_string()))
    }

    /// Reads the body as `framing` says, keeping it in `out` when given; fails past `limit`
    /// bytes.
    async fn body(
        &mut self,
        framing: Framing,
        mut out: Option<&mut Vec<u8>>,
        limit: u64,
    ) -> Result<(), BodyError> {
        match framing {
            Framing::Empty => Ok(()),
            Framing::Length(n) if n > limit => Err(BodyError::TooLong),
            Framing::Length(n) => self.take(n, out).await,
            Framing::Chunked => {
                let mut read = 0u64;
                loop {
                    let line = self.line().await?;
                    let size = line.split(';').next().unwrap_or("").trim();
                    let size = u64::from_str_radix(size, 16).map_err(|_| {
                        BodyError::Broken("a chunk size is not a hexadecimal number".into())
                    })?;
                    if size == 0 {
                        // Trailers, up to the empty line.
                        while !self.line().await?.is_empty() {}
                        return Ok(());
                    }
                    read = read.saturating_add(size);
                    if read > limit {
                        return Err(BodyError::TooLong);
                    }
                    self.take(size, out.as_deref_mut()).await?;
                    if !self.line().await?.is_empty() {
                        return Err(BodyError::Broken("a chunk is longer than its size".into()));
                    }
                }
            }
            Framing::Close => {
                let mut read = self.pending().len() as u64;
                loop {
                    if read > limit {
                        return Err(BodyError::TooLong);
                    }
                    if let Some(out) = out.as_deref_mut() {
                        out.extend_from_slice(self.pending());
                    }
                    self.pos = self.buf.len();
                    match self.fill_body().await? {
                        0 => return Ok(()),
                        n => read = read.saturating_add(n as u64),
                    }
                }
            }
        }
    }
}

/// The status, framing and keep-alive of an answer's head; `Err` for a framing that cannot be
/// trusted (RFC 9112 section 6.3: a bad `Content-Length` is an unrecoverable error).
fn judge_head(
    response: &httparse::Response<'_, '_>,
    status: u16,
    head_request: bool,
) -> Result<Head, String> {
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = false;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or("the answer's Content-Length is not a number")?;
            if length.is_some_and(|l| l != n) {
                return Err("the answer has two different Content-Length headers".into());
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked is the last coding when the body is chunked at all.
            chunked = std::str::from_utf8(h.value).is_ok_and(|v| {
                v.rsplit(',')
                    .next()
                    .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
            });
        } else if h.name.eq_ignore_ascii_case("connection") {
            close |= std::str::from_utf8(h.value)
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
        }
    }
    let framing = if head_request || (100..200).contains(&status) || status == 204 || status == 304
    {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::Close
    };
    Ok(Head {
        status,
        framing,
        // HTTP/1.1 keeps the connection unless it says otherwise; HTTP/1.0 is not reused.
        keep_alive: response.version == Some(1) && !close && framing != Framing::Close,
    })
}

impl HttpProbe {
    fn prepare(&self, target: &Target) -> Result<State, String> {
        let method = match self.method {
            HttpMethod::GET => "GET",
            HttpMethod::HEAD => "HEAD",
        };
        // Checked by `validate` already; checked again here because the bytes go on the wire
        // as they are: no CR or LF may split the request.
        let uri = self
            .path
            .parse::<Uri>()
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let host = match &self.host {
            Some(host) => HeaderValue::from_str(host),
            None => HeaderValue::from_str(&target.endpoint()),
        }
        .map_err(|e| format!("cannot build the request: {e}"))?;
        let mut head = Vec::with_capacity(128);
        let mut line = |name: &[u8], value: &[u8]| {
            head.extend_from_slice(name);
            head.extend_from_slice(b": ");
            head.extend_from_slice(value);
            head.extend_from_slice(b"\r\n");
        };
        line(b"Host", host.as_bytes());
        line(
            b"User-Agent",
            concat!("elasticd-health/", env!("CARGO_PKG_VERSION")).as_bytes(),
        );
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| format!("cannot build the request: {e}"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|e| format!("cannot build the request: {e}"))?;
            line(name.as_str().as_bytes(), value.as_bytes());
        }
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let start = format!("{method} {path} HTTP/1.1\r\n");
        let build = |close: bool| -> Box<[u8]> {
            let mut request = Vec::with_capacity(start.len() + head.len() + 21);
            request.extend_from_slice(start.as_bytes());
            request.extend_from_slice(&head);
            if close {
                request.extend_from_slice(b"Connection: close\r\n");
            }
            request.extend_from_slice(b"\r\n");
            request.into_boxed_slice()
        };
        Ok(State {
            prepared: Prepared {
                keep: build(false),
                close: build(true),
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
    ///
    /// HTTP/1.1 is spoken here directly rather than through hyper's client: a probe is one
    /// prepared write and one parse of the answer's head (httparse, as hyper uses), and a
    /// hyper connection per probe (its handshake, request channel, buffers and header maps)
    /// cost more instructions than the rest of the probe together (docs/benchmarks.md).
    async fn exchange(
        &self,
        mut io: Box<dyn Io>,
        uses: u32,
        permit: Option<OwnedSemaphorePermit>,
        prepared: &Prepared,
    ) -> (Exchange, Option<Kept>) {
        let uses = uses.saturating_add(1);
        // The last request a connection carries says so: the backend closes first, so the
        // closed socket's TIME_WAIT stays on its side and no local port is held.
        let last = permit.is_none() || uses >= MAX_REQUESTS_PER_CONNECTION;
        let request = if last {
            &prepared.close
        } else {
            &prepared.keep
        };
        // A TLS stream holds what is written until it is flushed.
        let sent = async {
            io.write_all(request).await?;
            io.flush().await
        };
        if let Err(e) = sent.await {
            return (
                Exchange::Lost(format!("sending the request failed: {e}")),
                None,
            );
        }
        let mut reader = Reader {
            io,
            buf: Vec::with_capacity(READ_CHUNK),
            pos: 0,
        };
        let head = match reader.head(self.method == HttpMethod::HEAD).await {
            Ok(head) => head,
            Err(e) => return (Exchange::Lost(e), None),
        };
        let outcome = self.judge(&mut reader, &head, last).await;
        let reusable = matches!(
            outcome,
            Exchange::Answered {
                result: Ok(()),
                reusable: true
            }
        );
        // Bytes past the answer would be read as the next answer: not reusable.
        let kept = match (reusable && reader.pending().is_empty(), permit) {
            (true, Some(permit)) => Some(Kept {
                io: reader.io,
                uses,
                permit,
            }),
            _ => None,
        };
        (outcome, kept)
    }

    /// Judges an answer by its head and (when `expect_body` asks, or to reuse the connection)
    /// its body; `last`: the connection is not reused after it.
    async fn judge(&self, reader: &mut Reader, head: &Head, last: bool) -> Exchange {
        let status = head.status;
        if !self.expect_status.contains(status) {
            return Exchange::Answered {
                result: Err(format!("answered status {status}")),
                reusable: false,
            };
        }
        let reusable = !last && head.keep_alive;
        let limit = MAX_BODY_BYTES as u64;
        let Some(expected) = &self.expect_body else {
            // The body is read to its end (and dropped) only so that the connection can carry
            // the next probe; a long one is not worth it.
            let whole = reusable && reader.body(head.framing, None, limit).await.is_ok();
            return Exchange::Answered {
                result: Ok(()),
                reusable: whole,
            };
        };
        // A body over the limit fails the probe: status pages are small, and reading on would
        // let one backend make every probe of it hold more memory.
        let mut body = Vec::new();
        if let Err(e) = reader.body(head.framing, Some(&mut body), limit).await {
            let e = match e {
                BodyError::TooLong => format!("it is over {MAX_BODY_BYTES} bytes"),
                BodyError::Broken(e) => e,
            };
            return Exchange::Answered {
                result: Err(format!("reading the body failed: {e}")),
                reusable: false,
            };
        }
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
